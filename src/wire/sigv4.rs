//! AWS Signature Version 4 for sqsbeat's own `SendMessageBatch` requests
//! (src/wire/sqs/send.rs).
//!
//! Only what one kind of request needs: a POST of a JSON body with a fixed
//! set of headers, signed in the `Authorization` header. The signing key
//! (four chained HMACs from the secret) depends only on the day, the
//! region, the service and the secret, so it is derived once per day and
//! secret and kept; a request then costs one SHA-256 of the canonical
//! request and one HMAC of the string to sign (the payload's SHA-256 is
//! the caller's, which also uses it for retry jitter).

use std::fmt::Write as _;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, Timelike, Utc};
use ring::{digest, hmac};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The credentials a request is signed with.
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    /// Sent and signed as `x-amz-security-token` when present.
    pub session_token: Option<&'a str>,
}

/// One POST to sign. Its signed headers are `host`, `x-amz-date`, with a
/// session token `x-amz-security-token`, and `headers`: the request must
/// carry exactly these values.
pub struct Request<'a> {
    /// The `Host` header as sent (`host` or `host:port` for a port other
    /// than the scheme's default).
    pub host: &'a str,
    /// The request path as sent (already percent-encoded), e.g. `/`.
    pub path: &'a str,
    /// The other headers to sign, names in lower case, values as sent
    /// (`content-type`, `x-amz-target`, ...).
    pub headers: &'a [(&'a str, &'a str)],
    /// SHA-256 of the body.
    pub payload_sha256: &'a [u8; 32],
}

/// The headers that carry a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `X-Amz-Date`: `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
    /// `Authorization`.
    pub authorization: String,
}

struct DayKey {
    date: [u8; 8],
    secret: String,
    key: hmac::Key,
}

/// Signs requests for one region and service, keeping the signing key of
/// the current day and secret.
pub struct Signer {
    region: String,
    service: String,
    /// A std mutex: held only to read or replace the key, never across an
    /// await.
    key: Mutex<Option<DayKey>>,
}

impl Signer {
    pub fn new(region: &str, service: &str) -> Self {
        Signer {
            region: region.to_string(),
            service: service.to_string(),
            key: Mutex::new(None),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Signs `req` as sent at `now` with `keys`.
    pub fn sign(&self, keys: Keys<'_>, req: &Request<'_>, now: DateTime<Utc>) -> Signature {
        let amz_date = amz_date(now);
        let date = &amz_date[..8];
        let key = self.signing_key(keys.secret_access_key, date);

        let mut canonical = String::with_capacity(512);
        canonical.push_str("POST\n");
        push_canonical_path(&mut canonical, req.path);
        // No query string.
        canonical.push_str("\n\n");
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(req.headers.len() + 3);
        headers.push(("host", req.host));
        headers.push(("x-amz-date", &amz_date));
        if let Some(token) = keys.session_token {
            headers.push(("x-amz-security-token", token));
        }
        headers.extend_from_slice(req.headers);
        headers.sort_unstable_by_key(|(name, _)| *name);
        let mut signed_headers = String::with_capacity(96);
        for (name, value) in &headers {
            let _ = writeln!(canonical, "{name}:{}", value.trim());
            if !signed_headers.is_empty() {
                signed_headers.push(';');
            }
            signed_headers.push_str(name);
        }
        canonical.push('\n');
        canonical.push_str(&signed_headers);
        canonical.push('\n');
        push_hex(&mut canonical, req.payload_sha256);

        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let mut to_sign = String::with_capacity(160);
        let _ = write!(to_sign, "{ALGORITHM}\n{amz_date}\n{scope}\n");
        push_hex(
            &mut to_sign,
            digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref(),
        );

        let signature = hmac::sign(&key, to_sign.as_bytes());
        let mut authorization = String::with_capacity(256);
        let _ = write!(
            authorization,
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature=",
            keys.access_key_id
        );
        push_hex(&mut authorization, signature.as_ref());
        Signature {
            amz_date,
            authorization,
        }
    }

    /// The day's signing key for `secret`, derived on the first request of
    /// a day or after the secret changed.
    fn signing_key(&self, secret: &str, date: &str) -> hmac::Key {
        let mut cached = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = cached.as_ref()
            && k.date.as_slice() == date.as_bytes()
            && k.secret == secret
        {
            return k.key.clone();
        }
        let key = derive_key(secret, date, &self.region, &self.service);
        let mut day = [0u8; 8];
        day.copy_from_slice(&date.as_bytes()[..8]);
        *cached = Some(DayKey {
            date: day,
            secret: secret.to_string(),
            key: key.clone(),
        });
        key
    }
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
fn derive_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let k_secret = format!("AWS4{secret}");
    let mut k = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, k_secret.as_bytes()),
        date.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        k = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, k.as_ref()),
            part.as_bytes(),
        );
    }
    hmac::Key::new(hmac::HMAC_SHA256, k.as_ref())
}

/// `YYYYMMDDTHHMMSSZ`, written without a format string.
fn amz_date(now: DateTime<Utc>) -> String {
    let mut s = String::with_capacity(16);
    let _ = write!(
        s,
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    s
}

/// The canonical URI: every byte but the unreserved ones and `/`
/// percent-encoded. The path given is already encoded, so a `%` in it is
/// encoded again, as SigV4 asks for every service but S3.
fn push_canonical_path(out: &mut String, path: &str) {
    if path.is_empty() {
        out.push('/');
        return;
    }
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
}

/// SHA-256 of `body`.
pub fn sha256(body: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, body).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4::SigningParams;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    /// The `Authorization` header the aws-sigv4 crate (the SDK's signer)
    /// computes for the same request.
    fn reference(
        keys: Keys<'_>,
        region: &str,
        url: &str,
        host: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> (String, Option<String>) {
        let creds = Credentials::new(
            keys.access_key_id,
            keys.secret_access_key,
            keys.session_token.map(str::to_string),
            None,
            "test",
        );
        let identity = creds.into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("sqs")
            .time(now.into())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [("host", host)].into_iter().chain(HEADERS);
        let request =
            SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))
                .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let (out, _) = instructions.into_parts();
        let mut authorization = None;
        let mut token = None;
        for h in out {
            match h.name() {
                "authorization" => authorization = Some(h.value().to_string()),
                "x-amz-security-token" => token = Some(h.value().to_string()),
                _ => {}
            }
        }
        (authorization.unwrap(), token)
    }

    fn ours(
        signer: &Signer,
        keys: Keys<'_>,
        host: &str,
        path: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Signature {
        signer.sign(
            keys,
            &Request {
                host,
                path,
                headers: &HEADERS,
                payload_sha256: &sha256(body),
            },
            now,
        )
    }

    const HEADERS: [(&str, &str); 3] = [
        ("x-amz-target", "AmazonSQS.SendMessageBatch"),
        ("content-type", "application/x-amz-json-1.0"),
        ("x-amzn-query-mode", "true"),
    ];

    const BODY: &[u8] = br#"{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/celery","Entries":[{"Id":"0","MessageBody":"eyJib2R5IjogIiJ9"}]}"#;

    #[test]
    fn matches_the_sdk_signer_without_a_session_token() {
        let keys = Keys {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: None,
        };
        let now = at("2026-11-28T09:08:07Z");
        let signer = Signer::new("eu-west-1", "sqs");
        let got = ours(&signer, keys, "sqs.eu-west-1.amazonaws.com", "/", BODY, now);
        let (want, token) = reference(
            keys,
            "eu-west-1",
            "https://sqs.eu-west-1.amazonaws.com/",
            "sqs.eu-west-1.amazonaws.com",
            BODY,
            now,
        );
        assert_eq!(got.authorization, want);
        assert_eq!(got.amz_date, "20261128T090807Z");
        assert_eq!(token, None);
        assert!(got.authorization.contains(
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target;x-amzn-query-mode,"
        ));
    }

    #[test]
    fn matches_the_sdk_signer_with_a_session_token_a_port_and_a_path() {
        let keys = Keys {
            access_key_id: "ASIAEXAMPLE",
            secret_access_key: "secret/with+symbols=",
            session_token: Some("FwoGZXIvYXdzEXAMPLE//token+with/slashes=="),
        };
        let now = at("2026-01-02T23:59:59Z");
        let signer = Signer::new("us-gov-west-1", "sqs");
        let got = ours(&signer, keys, "localhost:4566", "/sqs%20proxy/", BODY, now);
        let (want, token) = reference(
            keys,
            "us-gov-west-1",
            "http://localhost:4566/sqs%20proxy/",
            "localhost:4566",
            BODY,
            now,
        );
        assert_eq!(got.authorization, want);
        assert_eq!(token.as_deref(), keys.session_token);
        assert!(got.authorization.contains(
            "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target;x-amzn-query-mode,"
        ));
    }

    #[test]
    fn the_key_is_derived_again_for_a_new_day_or_secret() {
        let signer = Signer::new("eu-west-1", "sqs");
        let keys = |secret| Keys {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: secret,
            session_token: None,
        };
        let host = "sqs.eu-west-1.amazonaws.com";
        let url = "https://sqs.eu-west-1.amazonaws.com/";
        // The same signer across a day boundary and a rotated secret: each
        // signature still matches a fresh reference signer.
        for (secret, now) in [
            ("first", "2026-11-28T23:59:59Z"),
            ("first", "2026-11-28T12:00:00Z"),
            ("first", "2026-11-29T00:00:00Z"),
            ("second", "2026-11-29T00:00:01Z"),
            ("first", "2026-11-29T00:00:02Z"),
        ] {
            let now = at(now);
            let got = ours(&signer, keys(secret), host, "/", BODY, now);
            let (want, _) = reference(keys(secret), "eu-west-1", url, host, BODY, now);
            assert_eq!(got.authorization, want, "{secret} at {now}");
        }
    }
}
