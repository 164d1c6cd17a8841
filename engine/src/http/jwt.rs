//! CDS Hooks 2.0 client authentication: the EHR signs a short-lived JSON Web Token with its own
//! private key and sends it as the bearer token of every call to `/cds-services/…`; the service
//! checks it against the public keys (JWKS) configured for that EHR.
//!
//! A client is a `[[hooks_client]]` entry of the tokens file: its issuer (`iss`), its public
//! keys (`jwks`, the JWK Set as JSON text, or `jwks_file`, a path relative to the tokens file),
//! the audiences it may address (this service's base URL as the EHR knows it; the token's `aud`
//! is that URL followed by the endpoint's path, or the URL alone), and the role and scope its
//! calls get, as a token's. What is checked, per the specification: a signature by one of the
//! client's keys (`kid`, or its one key) with ES256, ES384, RS256, RS384 or RS512; `iss` a
//! configured client; `aud`; `exp` in the future and at most five minutes ahead; a `jti` that
//! this process has not seen from that issuer before the token expires. A refused token gets
//! the same 401 as a wrong bearer token; why it was refused is counted and logged with fixed
//! texts (the token itself is never logged).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{Role, Token};

/// How far a clock may be off, in seconds.
const LEEWAY: i64 = 30;
/// The longest a token may live ahead, per the specification.
const MAX_LIFETIME: i64 = 300;
/// The most token ids remembered (bounded memory; the oldest expiry goes first).
const MAX_REMEMBERED: usize = 100_000;

/// A `[[hooks_client]]` entry of the tokens file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksClientEntry {
    pub name: String,
    /// The EHR's issuer identifier, as in its tokens' `iss`.
    pub iss: String,
    /// The JWK Set as JSON text.
    #[serde(default)]
    pub jwks: Option<String>,
    /// A file with the JWK Set, relative to the tokens file.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// This service's base URLs as the EHR addresses it (`https://cds.example.org`).
    pub audience: Vec<String>,
    pub role: Role,
    #[serde(default)]
    pub hospitals: Vec<i64>,
    #[serde(default)]
    pub departments: Vec<String>,
}

/// One public key of a JWK Set.
#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// A configured EHR, its keys read.
#[derive(Debug, Clone)]
pub struct HooksClient {
    token: Token,
    iss: String,
    audience: Vec<String>,
    keys: Vec<Jwk>,
}

impl HooksClient {
    /// Reads the entry's keys (`dir`: the tokens file's directory); an error names the client.
    pub fn load(entry: HooksClientEntry, dir: &Path) -> Result<Self, String> {
        let text = match (&entry.jwks, &entry.jwks_file) {
            (Some(text), None) => text.clone(),
            (None, Some(file)) => std::fs::read_to_string(dir.join(file))
                .map_err(|e| format!("hooks client {:?}: jwks_file: {e}", entry.name))?,
            _ => {
                return Err(format!(
                    "hooks client {:?}: give its keys as jwks or jwks_file (one of them)",
                    entry.name
                ))
            }
        };
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|e| format!("hooks client {:?}: not a JWK Set: {e}", entry.name))?;
        if set.keys.is_empty() {
            return Err(format!("hooks client {:?}: no keys", entry.name));
        }
        if entry.audience.is_empty() {
            return Err(format!("hooks client {:?}: no audience", entry.name));
        }
        Ok(HooksClient {
            token: Token {
                name: format!("hooks:{}", entry.name),
                sha256: String::new(),
                role: entry.role,
                hospitals: entry.hospitals,
                departments: entry.departments,
            },
            iss: entry.iss,
            audience: entry
                .audience
                .iter()
                .map(|a| a.trim_end_matches('/').to_owned())
                .collect(),
            keys: set.keys,
        })
    }
}

/// Why a client JWT was refused (a fixed text each, for logs and the metric's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed")]
    Malformed,
    #[error("unknown_issuer")]
    UnknownIssuer,
    #[error("unknown_key")]
    UnknownKey,
    #[error("algorithm")]
    Algorithm,
    #[error("signature")]
    Signature,
    #[error("audience")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("lifetime")]
    Lifetime,
    #[error("no_jti")]
    NoJti,
    #[error("replayed")]
    Replayed,
    /// More unexpired token ids than this process remembers: refused rather than forgetting
    /// one that could then be replayed.
    #[error("too_many")]
    TooMany,
}

/// The token ids seen, per issuer, until their tokens expire.
#[derive(Debug, Default)]
pub struct SeenIds {
    ids: Mutex<HashMap<(String, String), i64>>,
}

impl SeenIds {
    /// Remembers `jti` of `iss` until `exp`; refused when it was seen already, or when the
    /// ids of tokens not yet expired fill the memory.
    fn first_use(&self, iss: &str, jti: &str, exp: i64, now: i64) -> Result<(), Refusal> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let key = (iss.to_owned(), jti.to_owned());
        let live = |until: &i64| until.saturating_add(LEEWAY) >= now;
        if ids.get(&key).is_some_and(live) {
            return Err(Refusal::Replayed);
        }
        if ids.len() >= MAX_REMEMBERED {
            ids.retain(|_, until| live(until));
        }
        if ids.len() >= MAX_REMEMBERED {
            return Err(Refusal::TooMany);
        }
        ids.insert(key, exp);
        Ok(())
    }
}

/// Whether a bearer string has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(bearer: &str) -> bool {
    bearer.split('.').count() == 3 && bearer.starts_with("ey")
}

fn part(text: &str) -> Result<Value, Refusal> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Refusal::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Refusal::Malformed)
}

fn bytes(text: Option<&str>) -> Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD
        .decode(text.ok_or(Refusal::UnknownKey)?)
        .map_err(|_| Refusal::UnknownKey)
}

/// Checks `signature` over `signed` with `key` and `alg`.
fn verify_signature(alg: &str, key: &Jwk, signed: &[u8], sig: &[u8]) -> Result<(), Refusal> {
    let ec = |algorithm: &'static signature::EcdsaVerificationAlgorithm, curve: &str| {
        if key.kty != "EC" || key.crv.as_deref() != Some(curve) {
            return Err(Refusal::Algorithm);
        }
        let mut point = vec![4u8];
        point.extend(bytes(key.x.as_deref())?);
        point.extend(bytes(key.y.as_deref())?);
        UnparsedPublicKey::new(algorithm, point)
            .verify(signed, sig)
            .map_err(|_| Refusal::Signature)
    };
    let rsa = |params: &'static signature::RsaParameters| {
        if key.kty != "RSA" {
            return Err(Refusal::Algorithm);
        }
        RsaPublicKeyComponents {
            n: bytes(key.n.as_deref())?,
            e: bytes(key.e.as_deref())?,
        }
        .verify(params, signed, sig)
        .map_err(|_| Refusal::Signature)
    };
    match alg {
        "ES256" => ec(&signature::ECDSA_P256_SHA256_FIXED, "P-256"),
        "ES384" => ec(&signature::ECDSA_P384_SHA384_FIXED, "P-384"),
        "RS256" => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        _ => Err(Refusal::Algorithm),
    }
}

/// The token a client JWT stands for, when it is valid for a call to `path` (the endpoint's
/// path, `/cds-services/…`) at `now` (seconds since the epoch).
pub fn verify(
    jwt: &str,
    clients: &[HooksClient],
    path: &str,
    now: i64,
    seen: &SeenIds,
) -> Result<Token, Refusal> {
    let mut parts = jwt.split('.');
    let (Some(header), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let head = part(header)?;
    let body = part(claims)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| Refusal::Malformed)?;
    let iss = body["iss"].as_str().ok_or(Refusal::Malformed)?;
    let client = clients
        .iter()
        .find(|c| c.iss == iss)
        .ok_or(Refusal::UnknownIssuer)?;
    let alg = head["alg"].as_str().ok_or(Refusal::Algorithm)?;
    let key = match head["kid"].as_str() {
        Some(kid) => client.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        None if client.keys.len() == 1 => client.keys.first(),
        None => None,
    }
    .ok_or(Refusal::UnknownKey)?;
    let signed = &jwt[..header.len() + 1 + claims.len()];
    verify_signature(alg, key, signed.as_bytes(), &sig)?;

    let audiences: Vec<&str> = match &body["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let addressed = audiences.iter().any(|aud| {
        let aud = aud.trim_end_matches('/');
        client
            .audience
            .iter()
            .any(|base| aud == base || aud == format!("{base}{path}"))
    });
    if !addressed {
        return Err(Refusal::Audience);
    }
    // NumericDate: seconds, which may have a fraction.
    let exp = body["exp"]
        .as_i64()
        .or_else(|| body["exp"].as_f64().map(|f| f as i64))
        .ok_or(Refusal::Expired)?;
    if exp.saturating_add(LEEWAY) < now {
        return Err(Refusal::Expired);
    }
    if exp > now + MAX_LIFETIME + LEEWAY {
        return Err(Refusal::Lifetime);
    }
    let jti = body["jti"]
        .as_str()
        .filter(|j| !j.is_empty())
        .ok_or(Refusal::NoJti)?;
    seen.first_use(iss, jti, exp, now)?;
    Ok(client.token.clone())
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// An EC P-384 key pair and its JWK Set.
    fn ehr_key() -> (EcdsaKeyPair, String) {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key pair");
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(48);
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "k1",
            "x": b64(x), "y": b64(y)}]});
        (pair, jwks.to_string())
    }

    fn sign(pair: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("sign");
        format!("{signed}.{}", b64(sig.as_ref()))
    }

    fn client(jwks: String) -> HooksClient {
        HooksClient::load(
            HooksClientEntry {
                name: "ehr".into(),
                iss: "https://ehr.example.org".into(),
                jwks: Some(jwks),
                jwks_file: None,
                audience: vec!["https://cds.example.org/".into()],
                role: Role::Clinician,
                hospitals: vec![1],
                departments: Vec::new(),
            },
            Path::new("."),
        )
        .expect("client")
    }

    #[test]
    fn a_signed_token_is_checked_claim_by_claim() {
        let (pair, jwks) = ehr_key();
        let clients = [client(jwks)];
        let path = "/cds-services/cds-patient-alerts";
        let header = serde_json::json!({"alg": "ES384", "typ": "JWT", "kid": "k1"});
        let claims = |jti: &str, aud: &str, exp: i64| {
            serde_json::json!({"iss": "https://ehr.example.org", "sub": "client",
                "aud": aud, "exp": exp, "iat": NOW, "jti": jti})
        };
        let aud = format!("https://cds.example.org{path}");
        let seen = SeenIds::default();
        let check = |jwt: &str| verify(jwt, &clients, path, NOW, &seen);

        let good = sign(&pair, &header, &claims("a", &aud, NOW + 60));
        assert!(looks_like_jwt(&good));
        let token = check(&good).expect("valid");
        assert_eq!(
            (token.name.as_str(), token.role),
            ("hooks:ehr", Role::Clinician)
        );
        assert_eq!(check(&good).err(), Some(Refusal::Replayed));
        let base = sign(
            &pair,
            &header,
            &claims("b", "https://cds.example.org", NOW + 60),
        );
        assert!(check(&base).is_ok(), "the base URL alone is an audience");

        let cases = [
            (claims("c", &aud, NOW - 120), Refusal::Expired),
            (claims("d", &aud, NOW + 3600), Refusal::Lifetime),
            (
                claims("e", "https://other.example.org", NOW + 60),
                Refusal::Audience,
            ),
            (claims("", &aud, NOW + 60), Refusal::NoJti),
        ];
        for (claims, refusal) in cases {
            assert_eq!(check(&sign(&pair, &header, &claims)).err(), Some(refusal));
        }
        let mut other = claims("f", &aud, NOW + 60);
        other["iss"] = "https://stranger.example.org".into();
        assert_eq!(
            check(&sign(&pair, &header, &other)).err(),
            Some(Refusal::UnknownIssuer)
        );
        let unknown_kid = serde_json::json!({"alg": "ES384", "kid": "k2"});
        assert_eq!(
            check(&sign(&pair, &unknown_kid, &claims("g", &aud, NOW + 60))).err(),
            Some(Refusal::UnknownKey)
        );
        let none = serde_json::json!({"alg": "none", "kid": "k1"});
        assert_eq!(
            check(&sign(&pair, &none, &claims("h", &aud, NOW + 60))).err(),
            Some(Refusal::Algorithm)
        );
        // Another key's signature under the client's key id.
        let (stranger, _) = ehr_key();
        assert_eq!(
            check(&sign(&stranger, &header, &claims("i", &aud, NOW + 60))).err(),
            Some(Refusal::Signature)
        );
        // A changed claim breaks the signature.
        let valid = sign(&pair, &header, &claims("j", &aud, NOW + 60));
        let mut parts: Vec<&str> = valid.split('.').collect();
        let forged = b64(claims("j", &aud, NOW + 299).to_string().as_bytes());
        parts[1] = &forged;
        assert_eq!(check(&parts.join(".")).err(), Some(Refusal::Signature));
        assert_eq!(check("ey.not.jwt").err(), Some(Refusal::Malformed));
    }

    /// RS384 with a 2048-bit test key (only a test's: `tests/fixtures/jwt/`), its JWK from the
    /// key's own modulus and exponent.
    #[test]
    fn an_rsa_signature_is_checked_too() {
        use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA384};
        let der = include_bytes!("../../tests/fixtures/jwt/rsa-2048-test-key.der");
        let pair = RsaKeyPair::from_der(der).expect("the test key");
        let public: RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
        let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "r1",
            "n": b64(&public.n), "e": b64(&public.e)}]});
        let clients = [client(jwks.to_string())];
        let header = serde_json::json!({"alg": "RS384", "kid": "r1"});
        let claims = serde_json::json!({"iss": "https://ehr.example.org",
            "aud": "https://cds.example.org", "exp": NOW + 60, "jti": "r"});
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA384,
            &SystemRandom::new(),
            signed.as_bytes(),
            &mut sig,
        )
        .expect("sign");
        let jwt = format!("{signed}.{}", b64(&sig));
        let seen = SeenIds::default();
        assert!(verify(&jwt, &clients, "/cds-services", NOW, &seen).is_ok());
        // The same key under an EC algorithm's name.
        let es = format!(
            "{}.{}",
            b64(br#"{"alg":"ES384","kid":"r1"}"#),
            &jwt[jwt.find('.').unwrap_or(0) + 1..]
        );
        assert_eq!(
            verify(&es, &clients, "/cds-services", NOW, &SeenIds::default()).err(),
            Some(Refusal::Algorithm)
        );
    }
}
