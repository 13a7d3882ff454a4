//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), as BIND, Knot,
//! PowerDNS and most DNS hosts accept: one message that replaces a name's
//! A records, sent over TCP.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The TSIG algorithms offered; BIND's `tsig-keygen` makes hmac-sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha512,
}

impl TsigAlgorithm {
    /// From the name BIND's key files use.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(Self::HmacSha256),
            "hmac-sha512" => Some(Self::HmacSha512),
            _ => None,
        }
    }

    fn wire_name(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha512 => "hmac-sha512",
        }
    }

    fn ring(self) -> ring::hmac::Algorithm {
        match self {
            Self::HmacSha256 => ring::hmac::HMAC_SHA256,
            Self::HmacSha512 => ring::hmac::HMAC_SHA512,
        }
    }
}

/// A TSIG key: its name, algorithm and secret.
#[derive(Clone)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Why an update did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("cannot reach the DNS server {server}: {source}")]
    Connect {
        server: String,
        source: std::io::Error,
    },
    #[error("the DNS server {0} did not answer in time")]
    Timeout(String),
    #[error("{0:?} cannot be a DNS name")]
    BadName(String),
    #[error("the DNS server refused the update: {0}")]
    Refused(String),
}

const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const TYPE_TSIG: u16 = 250;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
const OPCODE_UPDATE: u16 = 5 << 11;
/// How far the server's clock may be from ours (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), UpdateError> {
    let bad = || UpdateError::BadName(name.to_owned());
    let trimmed = name.trim_end_matches('.');
    if trimmed.len() > 253 {
        return Err(bad());
    }
    for label in trimmed.split('.').filter(|l| !l.is_empty()) {
        let len = u8::try_from(label.len()).map_err(|_| bad())?;
        if len > 63 {
            return Err(bad());
        }
        out.push(len);
        // TSIG signs names in canonical (lower-case) form.
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    Ok(())
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// One change to a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `name`'s records of this type become exactly this one.
    Replace { name: String, record: Record },
    /// `name`'s records of this type go.
    Delete { name: String, kind: RecordKind },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    A,
    Txt,
}

impl RecordKind {
    fn code(self) -> u16 {
        match self {
            Self::A => TYPE_A,
            Self::Txt => TYPE_TXT,
        }
    }
}

/// A record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    A(Ipv4Addr),
    /// One string of at most 255 bytes (an ACME DNS-01 value is 43).
    Txt(String),
}

impl Record {
    fn kind(&self) -> RecordKind {
        match self {
            Self::A(_) => RecordKind::A,
            Self::Txt(_) => RecordKind::Txt,
        }
    }

    fn rdata(&self) -> Result<Vec<u8>, UpdateError> {
        Ok(match self {
            Self::A(address) => address.octets().to_vec(),
            Self::Txt(text) => {
                let len = u8::try_from(text.len()).map_err(|_| {
                    UpdateError::BadName(format!("a TXT value of {} bytes", text.len()))
                })?;
                let mut data = vec![len];
                data.extend_from_slice(text.as_bytes());
                data
            }
        })
    }
}

fn put_rrset_delete(m: &mut Vec<u8>, name: &str, kind: RecordKind) -> Result<(), UpdateError> {
    put_name(m, name)?;
    put_u16(m, kind.code());
    put_u16(m, CLASS_ANY);
    put_u32(m, 0);
    put_u16(m, 0);
    Ok(())
}

/// The unsigned update of `zone` making `changes`.
fn update_message(
    id: u16,
    zone: &str,
    changes: &[Change],
    ttl: u32,
) -> Result<Vec<u8>, UpdateError> {
    let mut m = Vec::with_capacity(128);
    let updates: usize = changes
        .iter()
        .map(|c| match c {
            Change::Replace { .. } => 2,
            Change::Delete { .. } => 1,
        })
        .sum();
    put_u16(&mut m, id);
    put_u16(&mut m, OPCODE_UPDATE);
    put_u16(&mut m, 1); // zone
    put_u16(&mut m, 0); // prerequisites
    put_u16(
        &mut m,
        u16::try_from(updates).map_err(|_| UpdateError::BadName("too many changes".into()))?,
    );
    put_u16(&mut m, 0); // additional (the TSIG record is counted when added)
    put_name(&mut m, zone)?;
    put_u16(&mut m, TYPE_SOA);
    put_u16(&mut m, CLASS_IN);
    for change in changes {
        match change {
            Change::Delete { name, kind } => put_rrset_delete(&mut m, name, *kind)?,
            Change::Replace { name, record } => {
                // Delete the RRset, then add the one record.
                put_rrset_delete(&mut m, name, record.kind())?;
                let rdata = record.rdata()?;
                put_name(&mut m, name)?;
                put_u16(&mut m, record.kind().code());
                put_u16(&mut m, CLASS_IN);
                put_u32(&mut m, ttl);
                put_u16(&mut m, rdata.len() as u16);
                m.extend_from_slice(&rdata);
            }
        }
    }
    Ok(m)
}

/// Appends the TSIG record signing `message` (RFC 8945 section 4.3.3).
fn sign(mut message: Vec<u8>, key: &TsigKey, time_signed: u64) -> Result<Vec<u8>, UpdateError> {
    let id = [message[0], message[1]];
    let time = time_signed.to_be_bytes();
    let mut variables = Vec::new();
    put_name(&mut variables, &key.name)?;
    put_u16(&mut variables, CLASS_ANY);
    put_u32(&mut variables, 0);
    put_name(&mut variables, key.algorithm.wire_name())?;
    variables.extend_from_slice(&time[2..]);
    put_u16(&mut variables, FUDGE);
    put_u16(&mut variables, 0); // error
    put_u16(&mut variables, 0); // other length
    let hmac_key = ring::hmac::Key::new(key.algorithm.ring(), &key.secret);
    let mut context = ring::hmac::Context::with_key(&hmac_key);
    context.update(&message);
    context.update(&variables);
    let mac = context.sign();
    let mac = mac.as_ref();

    let mut rdata = Vec::new();
    put_name(&mut rdata, key.algorithm.wire_name())?;
    rdata.extend_from_slice(&time[2..]);
    put_u16(&mut rdata, FUDGE);
    put_u16(&mut rdata, mac.len() as u16);
    rdata.extend_from_slice(mac);
    rdata.extend_from_slice(&id);
    put_u16(&mut rdata, 0);
    put_u16(&mut rdata, 0);

    put_name(&mut message, &key.name)?;
    put_u16(&mut message, TYPE_TSIG);
    put_u16(&mut message, CLASS_ANY);
    put_u32(&mut message, 0);
    put_u16(&mut message, rdata.len() as u16);
    message.extend_from_slice(&rdata);
    // One additional record now: the TSIG.
    message[10..12].copy_from_slice(&1u16.to_be_bytes());
    Ok(message)
}

/// What an answer's RCODE means, for the owner.
fn rcode_text(rcode: u16) -> Option<&'static str> {
    Some(match rcode {
        0 => return None,
        1 => "FORMERR: the server did not understand the update",
        2 => "SERVFAIL: the server failed; see its log",
        5 => {
            "REFUSED: the server does not allow updates from this key or address (check its allow-update or update-policy)"
        }
        8 => "NOTZONE: the name is not inside the zone; check the zone setting",
        9 => {
            "NOTAUTH: the server did not accept the key; check the key name, algorithm and secret, and that the device's clock is right"
        }
        _ => "the server answered with an error code",
    })
}

/// Makes `changes` in `zone` on `server` (host:port), in one update.
pub async fn update(
    server: &str,
    zone: &str,
    changes: &[Change],
    key: &TsigKey,
) -> Result<(), UpdateError> {
    let mut id_bytes = [0u8; 2];
    getrandom::fill(&mut id_bytes)
        .map_err(|e| UpdateError::Refused(format!("no randomness: {e}")))?;
    let id = u16::from_be_bytes(id_bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Short-lived: a changed address or a finished challenge should not
    // linger in resolvers' caches.
    let message = sign(update_message(id, zone, changes, 60)?, key, now)?;
    let exchange = async {
        let mut stream =
            TcpStream::connect(server)
                .await
                .map_err(|source| UpdateError::Connect {
                    server: server.to_owned(),
                    source,
                })?;
        let io = |source| UpdateError::Connect {
            server: server.to_owned(),
            source,
        };
        let mut framed = Vec::with_capacity(message.len() + 2);
        put_u16(&mut framed, message.len() as u16);
        framed.extend_from_slice(&message);
        stream.write_all(&framed).await.map_err(io)?;
        let len = stream.read_u16().await.map_err(io)?;
        let mut answer = vec![0u8; usize::from(len)];
        stream.read_exact(&mut answer).await.map_err(io)?;
        Ok::<_, UpdateError>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| UpdateError::Timeout(server.to_owned()))??;
    if answer.len() < 12 || answer[..2] != id.to_be_bytes() {
        return Err(UpdateError::Refused(
            "the answer does not match the update".into(),
        ));
    }
    let rcode = u16::from_be_bytes([answer[2], answer[3]]) & 0x000f;
    match rcode_text(rcode) {
        None => Ok(()),
        Some(text) => Err(UpdateError::Refused(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_cased_labels_and_bad_ones_are_refused() {
        let mut out = Vec::new();
        put_name(&mut out, "WiKi.Example.ORG.").expect("name");
        assert_eq!(out, b"\x04wiki\x07example\x03org\x00");
        let long = format!("{}.org", "a".repeat(64));
        assert!(put_name(&mut Vec::new(), &long).is_err());
    }

    #[test]
    fn the_signature_covers_the_message_and_counts_one_record() {
        let key = TsigKey {
            name: "ddns-key".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: vec![7; 32],
        };
        let changes = [Change::Replace {
            name: "*.example.org".into(),
            record: Record::A(Ipv4Addr::new(203, 0, 113, 7)),
        }];
        let unsigned = update_message(0x1234, "example.org", &changes, 300).expect("message");
        let signed = sign(unsigned.clone(), &key, 1_700_000_000).expect("signed");
        assert_eq!(&signed[..10], &unsigned[..10]);
        assert_eq!(&signed[10..12], &[0, 1]);
        // The same input signs the same; another secret signs otherwise.
        assert_eq!(
            signed,
            sign(unsigned.clone(), &key, 1_700_000_000).expect("again")
        );
        let other = TsigKey {
            secret: vec![8; 32],
            ..key
        };
        assert_ne!(
            signed,
            sign(unsigned, &other, 1_700_000_000).expect("other")
        );
    }
}
