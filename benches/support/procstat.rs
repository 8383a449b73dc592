//! What /proc says about a process's threads, its writes, and the machine's CPUs: for benchmarks that
//! report where the time went, not only how fast it was.

/// Calls `f` with the /proc folder of each thread of `pid` ("self" or a number) named `name` (as /proc
/// shows it: at most 15 bytes).
fn each_thread(pid: &str, name: &str, mut f: impl FnMut(&std::path::Path)) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            f(&task.path());
        }
    }
}

/// What threads of one name used, summed (from /proc).
#[derive(Clone, Copy, Default)]
pub struct ThreadUse {
    /// On-CPU time.
    pub cpu_ns: u64,
    /// Time runnable but waiting for a core.
    pub wait_ns: u64,
    /// Of `cpu_ns`, the kernel's: how much of a thread's time is system calls and faults.
    pub kernel_ns: u64,
    /// Bytes handed to write calls: which thread writes what (aotel's writer the WAL, its
    /// checkpointer the database file).
    pub written: u64,
}

impl ThreadUse {
    /// Summed over the threads of `pid` named `name`, in one pass over them.
    pub fn of(pid: &str, name: &str) -> ThreadUse {
        let mut total = ThreadUse::default();
        each_thread(pid, name, |task| {
            let read = |file: &str| std::fs::read_to_string(task.join(file)).unwrap_or_default();
            let sched = read("schedstat");
            let mut times = sched
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0));
            total.cpu_ns += times.next().unwrap_or(0);
            total.wait_ns += times.next().unwrap_or(0);
            total.written += field(&read("io"), "wchar:");
            // stime is the 15th field of stat; the name (2nd) may hold spaces, so count after its ')'.
            let stat = read("stat");
            let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let ticks: u64 = after_name
                .split_whitespace()
                .nth(12)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            total.kernel_ns += (ticks as f64 / TICKS_PER_SECOND * 1e9) as u64;
        });
        total
    }

    /// What was used between `before` and this.
    pub fn since(self, before: ThreadUse) -> ThreadUse {
        ThreadUse {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            wait_ns: self.wait_ns.saturating_sub(before.wait_ns),
            kernel_ns: self.kernel_ns.saturating_sub(before.kernel_ns),
            written: self.written.saturating_sub(before.written),
        }
    }
}

/// The number after `key` in a `key value` line of a /proc file.
fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes the process has handed to write calls (`wchar`: its WAL and database writes).
pub fn written_bytes(pid: &str) -> u64 {
    field(
        &std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default(),
        "wchar:",
    )
}

/// The machine's CPU time so far, in clock ticks: [busy (user, nice, system), idle, iowait, other
/// (interrupts and time stolen by the hypervisor)].
pub fn cpu_ticks() -> [u64; 4] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    [at(0) + at(1) + at(2), at(3), at(4), at(5) + at(6) + at(7)]
}

/// Clock ticks per second of `cpu_ticks` (USER_HZ, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;
