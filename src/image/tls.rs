//! TLS for registries: the host's trust store plus the CA files a user configured, and two
//! things rustls does not do by itself that users of curl and skopeo expect.
//!
//! - A certificate the user configured as trusted for a registry is accepted when the
//!   registry presents exactly that certificate, even where WebPKI would refuse it. The usual
//!   self-signed certificate (`openssl req -x509 ... -addext subjectAltName=...`) is marked
//!   `CA:TRUE`, and rustls refuses a CA certificate as a server's own (`CaUsedAsEndEntity`);
//!   curl `--cacert` and skopeo `--cert-dir` accept it. The host name is still checked, and
//!   the handshake's signature is still verified against that certificate's key.
//! - A refused certificate is said in words, with the setting that fixes it
//!   ([`describe_refusal`]).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The host's roots and `extra` (PEM certificates from the user's CA files) for WebPKI, and
/// `extra` alone as certificates accepted when presented exactly.
#[derive(Debug)]
pub struct Verifier {
    inner: rustls_platform_verifier::Verifier,
    pinned: Vec<CertificateDer<'static>>,
}

impl Verifier {
    pub fn new(
        extra: Vec<CertificateDer<'static>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Verifier, rustls::Error> {
        Ok(Verifier {
            inner: rustls_platform_verifier::Verifier::new_with_extra_roots(
                extra.iter().cloned(),
                provider,
            )?,
            pinned: extra,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Err(refused);
        }
        // Exactly a certificate the user trusts: what remains to check is that it names this
        // host and is in its validity period.
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::InvalidCertificate(webpki_error(e)))?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| rustls::Error::InvalidCertificate(webpki_error(e)))?;
        check_validity(end_entity, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn webpki_error(e: webpki::Error) -> rustls::CertificateError {
    match e {
        webpki::Error::CertNotValidForName(_) => rustls::CertificateError::NotValidForName,
        webpki::Error::CertExpired { .. } => rustls::CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => rustls::CertificateError::NotValidYet,
        other => rustls::CertificateError::Other(rustls::OtherError(Arc::new(other))),
    }
}

/// notBefore <= now <= notAfter, read from the certificate's DER (WebPKI checks time only
/// while building a chain, which a pinned certificate skips).
fn check_validity(der: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let Some((not_before, not_after)) = validity(der.as_ref()) else {
        return Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ));
    };
    let now = now.as_secs() as i64;
    if now < not_before {
        return Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidYet,
        ));
    }
    if now > not_after {
        return Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        ));
    }
    Ok(())
}

/// The validity period of an X.509 certificate, as Unix times: Certificate ->
/// TBSCertificate -> [version], serial, signature, issuer, validity.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert, _) = der_item(der)?;
    let (_, tbs, _) = der_item(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = der_item(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    for _ in 0..3 {
        rest = der_item(rest)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = der_item(rest)?;
    let (t1, nb, after) = der_item(validity)?;
    let (t2, na, _) = der_item(after)?;
    Some((der_time(t1, nb)?, der_time(t2, na)?))
}

/// One DER item: (tag, contents, what follows).
fn der_item(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, head) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let body = b.get(head..head.checked_add(len)?)?;
    Some((tag, body, &b[head + len..]))
}

/// UTCTime (0x17, YYMMDDHHMMSSZ) or GeneralizedTime (0x18, YYYYMMDDHHMMSSZ) as a Unix time.
fn der_time(tag: u8, b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (mon, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mon <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mon + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// A registry's refused certificate in words, and the setting that fixes it, from the error
/// chain of a failed request. None when the failure was not about a certificate.
pub fn describe_refusal(e: &(dyn std::error::Error + 'static), registry: &str) -> Option<String> {
    let mut text = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        text.push_str(&c.to_string());
        text.push(' ');
        cause = c.source();
    }
    let ca = format!(
        "set `registries: {{\"{registry}\": {{ca: FILE}}}}` in the config to the PEM file of \
         the authority that signed it (or of the certificate itself)"
    );
    let why = if text.contains("UnknownIssuer") {
        format!("its certificate is signed by an authority this host does not trust; {ca}")
    } else if text.contains("CaUsedAsEndEntity") {
        format!(
            "it presents a CA certificate as its own (a self-signed one made with CA:TRUE), \
             which is accepted only when configured; {ca}"
        )
    } else if text.contains("NotValidForName") {
        format!(
            "its certificate does not name {registry}: reach it by a name the certificate \
             has (its subjectAltName), or have it re-issued for {registry}"
        )
    } else if text.contains("Expired") {
        "its certificate has expired (or this node's clock is wrong: check `date`)".to_string()
    } else if text.contains("NotValidYet") {
        "its certificate is not valid yet (check this node's clock: `date`)".to_string()
    } else if text.contains("certificate") || text.contains("Certificate") {
        format!("its certificate was refused; {ca}")
    } else {
        return None;
    };
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn1_times_read_as_unix_times() {
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x17, b"261201054514Z"), Some(1_796_103_914));
        assert_eq!(der_time(0x18, b"20261201054514Z"), Some(1_796_103_914));
        assert_eq!(der_time(0x18, b"20261201054514"), None, "no Z");
        assert_eq!(der_time(0x17, b"490101000000Z"), Some(2_493_072_000));
    }

    #[test]
    fn refusals_are_said_with_their_fix() {
        let e = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let why = describe_refusal(&e, "reg:5000").unwrap();
        assert!(
            why.contains("does not trust") && why.contains("\"reg:5000\": {ca: FILE}"),
            "{why}"
        );
        let e =
            std::io::Error::other("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))");
        assert!(describe_refusal(&e, "r").unwrap().contains("CA:TRUE"));
        let e = std::io::Error::other("connection refused");
        assert!(describe_refusal(&e, "r").is_none());
    }
}
