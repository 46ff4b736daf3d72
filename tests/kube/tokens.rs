//! Service account tokens requested through the Kubernetes API (`kubectl create token`) under
//! the server's limits.

use crate::kubectl::World;
use crate::support::tools::KUBECTL_MINORS;

/// `--service-account-max-token-expiration` caps a requested lifetime, with kube-apiserver's
/// warning, and is refused outside 1 hour to 2^32 seconds.
#[test]
fn a_token_request_beyond_the_max_expiration_is_shortened() {
    use base64::Engine as _;
    let w = World::start(&["--service-account-max-token-expiration", "2h"]);
    let k = w.kubectl(KUBECTL_MINORS[KUBECTL_MINORS.len() - 1]);
    let token = |duration: &str| {
        k.run(&[
            "create",
            "token",
            "app",
            "-n",
            "default",
            "--duration",
            duration,
        ])
    };
    let out = token("48h");
    assert_eq!(out.code, 0, "{}", out.err);
    assert!(
        out.err
            .contains("Warning: requested expiration of 172800 seconds shortened to 7200 seconds"),
        "{}",
        out.err
    );
    let payload = out.out.trim().split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        7200
    );
    // Within the cap: as asked, no warning.
    let out = token("1h");
    assert!(out.code == 0 && !out.err.contains("Warning"), "{}", out.err);
    // keyward's CLI (gRPC) prints the same warning kubectl prints.
    let kw_token = |duration: &str| {
        let args = [
            "create",
            "token",
            "app",
            "-n",
            "default",
            "--duration",
            duration,
        ];
        w.dev.kw(&args)
    };
    let (code, out, err) = kw_token("48h");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Warning: requested expiration of 172800 seconds shortened to 7200 seconds"),
        "{err}"
    );
    assert_eq!(out.trim().split('.').count(), 3, "{out}");
    let (code, _, err) = kw_token("1h");
    assert!(code == 0 && !err.contains("Warning"), "{err}");
    for bad in ["30m", "2000000h", "soon"] {
        let (ok, _, err) = crate::support::run(&[
            "dev",
            "--data",
            w.dev.path("other").to_str().unwrap(),
            "--service-account-max-token-expiration",
            bad,
        ]);
        assert!(
            !ok && err.contains("--service-account-max-token-expiration: "),
            "{bad}: {err}"
        );
        assert!(!w.dev.path("other").exists(), "{bad}");
    }
}
