//! Trace and span ids: validation, hex form, and the deterministic derivation importers use.

use sha2::{Digest, Sha256};

/// Why an id was refused; the message goes back to the client in `partial_success`.
pub fn check_id(id: &[u8], len: usize, what: &str) -> Result<(), String> {
    if id.len() != len {
        return Err(format!("{what} must be {len} bytes, got {}", id.len()));
    }
    if id.iter().all(|b| *b == 0) {
        return Err(format!("{what} is all zeros"));
    }
    Ok(())
}

pub fn to_hex(id: &[u8]) -> String {
    const_hex::encode(id)
}

/// Parses a hex id of exactly `len` bytes, any case.
pub fn from_hex(s: &str, len: usize) -> Option<Vec<u8>> {
    let bytes = const_hex::decode(s.trim()).ok()?;
    (bytes.len() == len && bytes.iter().any(|b| *b != 0)).then_some(bytes)
}

/// Trace id for a session: the UUID's own 16 bytes, else the first 16 bytes of SHA-256 of the key.
pub fn trace_id_for_session(key: &str) -> Vec<u8> {
    let hex: String = key.chars().filter(|c| *c != '-').collect();
    if hex.len() == 32 {
        if let Some(id) = from_hex(&hex, 16) {
            return id;
        }
    }
    Sha256::digest(key.as_bytes())[..16].to_vec()
}

/// Span id from a stable name such as `tool:<tool_use_id>`: the first 8 bytes of its SHA-256.
pub fn span_id_for(name: &str) -> Vec<u8> {
    let digest = Sha256::digest(name.as_bytes());
    let mut id = digest[..8].to_vec();
    if id.iter().all(|b| *b == 0) {
        id[7] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_session_keeps_its_bytes() {
        let id = trace_id_for_session("d796e8ba-ef3c-453f-97d7-b644930563f5");
        assert_eq!(to_hex(&id), "d796e8baef3c453f97d7b644930563f5");
        let other = trace_id_for_session("architect");
        assert_eq!(other.len(), 16);
        assert_ne!(other, id);
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id(&[0; 16], 16, "trace_id").is_err());
        assert!(check_id(&[1; 15], 16, "trace_id").is_err());
        assert!(check_id(&[1; 8], 8, "span_id").is_ok());
        assert_eq!(
            from_hex("0102030405060708", 8),
            Some(vec![1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert_eq!(from_hex("ABCDEF0102030405", 8).map(|v| v[0]), Some(0xab));
        assert_eq!(from_hex("0000000000000000", 8), None);
        assert_eq!(span_id_for("tool:toolu_1"), span_id_for("tool:toolu_1"));
    }
}
