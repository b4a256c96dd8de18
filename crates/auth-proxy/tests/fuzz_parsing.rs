//! Fuzz target for the header and token parsing, run as property tests on stable Rust
//! (cargo-fuzz needs nightly): arbitrary bytes must never panic, and whatever a parser
//! accepts must have the shape the rest of the proxy relies on.
//! More cases: `PROPTEST_CASES=100000 cargo test -p auth-proxy --test fuzz_parsing`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auth_proxy::auth::{JwtVerifier, parse_api_key, parse_bearer};
use auth_proxy::body::scan_frames;
use auth_proxy::config::{JwtAlg, JwtConfig, JwtKeyConfig};
use auth_proxy::proxy::{format_grpc_timeout, parse_path};
use proptest::prelude::*;

const SECRET: &str = "a-long-enough-hs256-secret-for-fuzzing!";

fn verifier() -> JwtVerifier {
    let cfg = JwtConfig {
        keys: vec![JwtKeyConfig {
            kid: Some("k".into()),
            alg: JwtAlg::HS256,
            secret: Some(SECRET.into()),
            pem: None,
            pem_file: None,
        }],
        ..JwtConfig::default()
    };
    JwtVerifier::new(&cfg, None).unwrap()
}

fn good_token() -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k".into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &h,
        &serde_json::json!({"sub": "fuzz", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn credential_headers(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(k) = parse_api_key(&raw) {
            prop_assert!(!k.is_empty() && k.len() <= 512);
            prop_assert!(k.bytes().all(|b| b.is_ascii_graphic()));
        }
        if let Ok(t) = parse_bearer(&raw) {
            prop_assert_eq!(t.split('.').count(), 3);
            prop_assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        }
    }

    #[test]
    fn bearer_like_strings(scheme in "(Bearer|bearer|BEARER|Basic|)", sep in "[ ]{0,3}", token in "[A-Za-z0-9_.=+/-]{0,80}") {
        let v = format!("{scheme}{sep}{token}");
        let _ = parse_bearer(v.as_bytes());
    }

    #[test]
    fn paths(p in "(/|//|%2F|[a-zA-Z0-9._]|\\.\\.|\\?){0,12}") {
        if let Ok((service, method)) = parse_path(&p) {
            prop_assert_eq!(format!("/{service}/{method}"), p.clone());
            prop_assert!(!p.contains("//") && !p.contains('%') && !p.contains('?'));
            prop_assert!(!service.starts_with('.') && !method.contains('.'));
        }
    }

    #[test]
    fn grpc_frames_any_split(
        lens in proptest::collection::vec(0u32..64, 0..6),
        cut in any::<prop::sample::Index>(),
        max in 0u64..64,
    ) {
        let mut all = Vec::new();
        for l in &lens {
            all.push(0u8);
            all.extend_from_slice(&l.to_be_bytes());
            all.extend(std::iter::repeat_n(0xAB, *l as usize));
        }
        let want = lens.iter().map(|l| u64::from(*l)).find(|l| *l > max);
        let cut = if all.is_empty() { 0 } else { cut.index(all.len() + 1) };
        let (mut h, mut have, mut rem) = ([0u8; 5], 0, 0);
        let a = scan_frames(&all[..cut], &mut h, &mut have, &mut rem, max);
        let got = a.or_else(|| scan_frames(&all[cut..], &mut h, &mut have, &mut rem, max));
        prop_assert_eq!(got, want);
    }

    #[test]
    fn grpc_frames_garbage(data in proptest::collection::vec(any::<u8>(), 0..300), max in any::<u64>()) {
        let (mut h, mut have, mut rem) = ([0u8; 5], 0, 0);
        let _ = scan_frames(&data, &mut h, &mut have, &mut rem, max);
    }

    #[test]
    fn grpc_timeouts(v in "[0-9]{0,10}[HMSmun]?", ms in 0u64..10_000_000_000) {
        let _ = fargo_runtime::layers::parse_grpc_timeout(&v);
        let d = std::time::Duration::from_millis(ms);
        let s = format_grpc_timeout(d);
        prop_assert!(fargo_runtime::layers::parse_grpc_timeout(&s).is_some(), "{}", s);
    }

    #[test]
    fn grpc_message_encoding(m in any::<String>()) {
        let e = auth_proxy::error::encode_message(&m);
        prop_assert!(http::HeaderValue::from_str(&e).is_ok());
        let back = percent_encoding::percent_decode_str(&e).decode_utf8().unwrap();
        prop_assert_eq!(back, m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Arbitrary strings and single-byte mutations of a valid token never verify
    /// (unless the mutation left the token unchanged) and never panic.
    #[test]
    fn tokens(garbage in "[A-Za-z0-9_.-]{0,300}", pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let v = verifier();
        let good = good_token();
        prop_assert!(rt.block_on(v.verify(&good)).is_ok());
        let _ = rt.block_on(v.verify(&garbage));
        let mut bytes = good.clone().into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        if let Ok(mutated) = String::from_utf8(bytes)
            && mutated != good
        {
            let r = rt.block_on(v.verify(&mutated));
            // Base64 padding bits may decode to the same bytes; anything else must fail.
            if let Ok(p) = r {
                prop_assert_eq!(p.name, "fuzz");
                let seg = |t: &str| t.split('.').map(str::len).collect::<Vec<_>>();
                prop_assert_eq!(seg(&mutated), seg(&good));
            }
        }
    }
}
