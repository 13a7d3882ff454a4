//! A small DNS server on the tunnel's address: `APP.local` and the device's
//! own `.local` name answer the tunnel address (mDNS does not cross a
//! tunnel); every other name is passed to the device's own resolver, so a
//! peer that sends all its DNS here still reaches the internet.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u8 = 3;

/// Which `.local` names the tunnel knows.
pub type Known = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The question of a query: its name (lower case, without the final dot),
/// type, and where the question section ends.
fn question(query: &[u8]) -> Option<(String, u16, usize)> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // Queries carry no compression; a pointer here is malformed.
        if len > 63 {
            return None;
        }
        let label = query.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    // Type and class must both be there: the answer repeats them.
    let fixed = query.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    Some((labels.join("."), qtype, at + 4))
}

/// The answer to a query for a name the tunnel knows.
fn local_answer(query: &[u8], qtype: u16, end: usize, address: Ipv4Addr, known: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(end + 16);
    out.extend_from_slice(&query[..2]);
    let rd = query[2] & 0x01;
    out.push(0x84 | rd); // response, authoritative
    out.push(if known { 0 } else { RCODE_NXDOMAIN });
    let answers: u16 = u16::from(known && qtype == TYPE_A);
    for count in [1, answers, 0, 0] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(&query[12..end]);
    if answers == 1 {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&address.octets());
    }
    out
}

/// The device's own resolver, from resolv.conf.
fn upstream() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|ip| ip.trim().parse().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

async fn forward(query: &[u8]) -> Option<Vec<u8>> {
    let server = upstream()?;
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(local).await.ok()?;
    socket.send_to(query, server).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(len);
    Some(buf)
}

/// Answers on `address`:53 until the task is dropped.
pub async fn serve(
    address: Ipv4Addr,
    known: Known,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let socket = Arc::new(UdpSocket::bind((address, 53)).await?);
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let query = buf[..len].to_vec();
            let Some((name, qtype, end)) = question(&query) else {
                continue;
            };
            let socket = Arc::clone(&socket);
            let known = Arc::clone(&known);
            tokio::spawn(async move {
                let answer = if name.ends_with(".local") {
                    Some(local_answer(&query, qtype, end, address, known(&name)))
                } else {
                    forward(&query).await
                };
                if let Some(answer) = answer {
                    let _ = socket.send_to(&answer, peer).await;
                }
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    #[test]
    fn known_names_answer_the_tunnel_address_and_others_do_not_exist() {
        let q = query("Wiki.local", TYPE_A);
        let (name, qtype, end) = question(&q).expect("question");
        assert_eq!((name.as_str(), qtype, end), ("wiki.local", TYPE_A, q.len()));
        let a = local_answer(&q, qtype, end, Ipv4Addr::new(10, 99, 0, 1), true);
        assert_eq!(&a[..2], &[0xab, 0xcd]);
        assert_eq!(a[3] & 0x0f, 0);
        assert_eq!(&a[6..8], &[0, 1]);
        assert_eq!(&a[a.len() - 4..], &[10, 99, 0, 1]);
        let none = local_answer(&q, qtype, end, Ipv4Addr::new(10, 99, 0, 1), false);
        assert_eq!(none[3] & 0x0f, RCODE_NXDOMAIN);
        assert_eq!(&none[6..8], &[0, 0]);
        assert!(question(&q[..15]).is_none(), "a cut query is ignored");
        assert!(
            question(&q[..q.len() - 1]).is_none(),
            "a query cut in its class is ignored"
        );
        assert!(
            question(&q[..q.len() - 2]).is_none(),
            "a query without its class is ignored"
        );
    }
}
