//! The few `struct tcp_info` counters (`INET_DIAG_INFO`, include/uapi/linux/tcp.h)
//! that say whether a connection's request was read and answered.

/// Counters of one connection, from its `tcp_info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// `tcpi_bytes_received`: bytes of the peer's sequence space received
    /// (data, plus 1 for its FIN once it arrived).
    pub bytes_received: u64,
    /// `tcpi_bytes_sent` (4.19+): data bytes this side sent.
    pub bytes_sent: u64,
    /// `tcpi_last_data_sent` / `tcpi_last_data_recv`: ms since this side
    /// last sent / received data (set at the handshake before any).
    pub last_data_sent_ms: u32,
    pub last_data_recv_ms: u32,
}

const LAST_DATA_SENT: usize = 44;
const LAST_DATA_RECV: usize = 52;
const BYTES_RECEIVED: usize = 128;
const BYTES_SENT: usize = 200;

/// Parses an `INET_DIAG_INFO` attribute; `None` when too short to hold
/// `tcpi_bytes_sent` (kernels before 4.19).
pub fn parse_tcp_info(b: &[u8]) -> Option<TcpInfo> {
    let u32_at = |o: usize| -> Option<u32> {
        let s = b.get(o..o + 4)?;
        Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u64_at = |o: usize| -> Option<u64> {
        let s = b.get(o..o + 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_ne_bytes(a))
    };
    Some(TcpInfo {
        bytes_received: u64_at(BYTES_RECEIVED)?,
        bytes_sent: u64_at(BYTES_SENT)?,
        last_data_sent_ms: u32_at(LAST_DATA_SENT)?,
        last_data_recv_ms: u32_at(LAST_DATA_RECV)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counters_at_their_uapi_offsets() {
        let mut b = vec![0u8; 232];
        b[44..48].copy_from_slice(&7u32.to_ne_bytes());
        b[52..56].copy_from_slice(&9u32.to_ne_bytes());
        b[128..136].copy_from_slice(&313u64.to_ne_bytes());
        b[200..208].copy_from_slice(&42u64.to_ne_bytes());
        assert_eq!(
            parse_tcp_info(&b),
            Some(TcpInfo {
                bytes_received: 313,
                bytes_sent: 42,
                last_data_sent_ms: 7,
                last_data_recv_ms: 9,
            })
        );
        assert_eq!(parse_tcp_info(&b[..200]), None);
    }
}
