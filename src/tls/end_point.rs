//! `tls-server-end-point` channel binding data (RFC 5929 section 4.1): the
//! hash of the server's certificate, with the hash function of the
//! certificate's own signature algorithm, SHA-256 when that is MD5 or
//! SHA-1. SCRAM-SHA-256-PLUS binds a login to it, so a man in the middle
//! who terminates TLS with another certificate cannot relay the login.
//!
//! Only the certificate's outer signature algorithm is read (a few DER
//! headers), pure and bounded by the certificate's length. Algorithms with
//! no single hash (Ed25519, RSASSA-PSS) give None, as in PostgreSQL: the
//! binding is then not offered.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// A hash function named by a signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The channel binding data for the DER certificate `cert`.
pub fn of(cert: &[u8]) -> Option<Vec<u8>> {
    Some(match signature_hash(cert)? {
        Hash::Sha224 => Sha224::digest(cert).to_vec(),
        Hash::Sha256 => Sha256::digest(cert).to_vec(),
        Hash::Sha384 => Sha384::digest(cert).to_vec(),
        Hash::Sha512 => Sha512::digest(cert).to_vec(),
    })
}

/// One DER tag-length-value at the front of `buf`: its tag, its content
/// and what follows.
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = rest.get(..n)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| len << 8 | usize::from(b));
        (len, &rest[n..])
    };
    let content = rest.get(..len)?;
    Some((tag, content, &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;

/// The hash the binding uses for `cert`: its signature algorithm's
/// (Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, ... }).
pub fn signature_hash(cert: &[u8]) -> Option<Hash> {
    let (SEQUENCE, cert, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, _tbs, rest) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = tlv(rest)? else {
        return None;
    };
    let (OID, oid, _) = tlv(algorithm)? else {
        return None;
    };
    // 1.2.840.113549.1.1.x (PKCS #1) and 1.2.840.10045.4.x (ECDSA).
    const PKCS1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    if let Some(last) = oid.strip_prefix(PKCS1) {
        return match last {
            // md5WithRSAEncryption, sha1WithRSAEncryption
            [0x04] | [0x05] | [0x0b] => Some(Hash::Sha256),
            [0x0c] => Some(Hash::Sha384),
            [0x0d] => Some(Hash::Sha512),
            [0x0e] => Some(Hash::Sha224),
            _ => None,
        };
    }
    match oid.strip_prefix(ECDSA)? {
        // ecdsa-with-SHA1
        [0x01] | [0x03, 0x02] => Some(Hash::Sha256),
        [0x03, 0x01] => Some(Hash::Sha224),
        [0x03, 0x03] => Some(Hash::Sha384),
        [0x03, 0x04] => Some(Hash::Sha512),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_hash_follows_the_signature_algorithm() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(signature_hash(&p256), Some(Hash::Sha256));
        assert_eq!(of(&p256).unwrap(), Sha256::digest(&p256).to_vec());
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(signature_hash(&p384), Some(Hash::Sha384));
        assert_eq!(of(&p384).unwrap().len(), 48);
        // No single hash: no binding, as in PostgreSQL.
        assert_eq!(signature_hash(&cert(&rcgen::PKCS_ED25519)), None);
    }

    #[test]
    fn garbage_and_truncated_certificates_give_none() {
        let good = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        for len in 0..good.len() {
            assert_eq!(of(&good[..len]), None, "cut at {len}");
        }
        assert_eq!(of(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(of(b"\x30\x80"), None);
        assert_eq!(of(b""), None);
    }
}
