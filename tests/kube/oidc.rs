//! The service account issuer's OpenID Connect discovery (`/.well-known/openid-configuration`,
//! `/openid/v1/jwks`), read by kubectl as a service account and checked by another
//! implementation: Python's `cryptography` builds the key from the JWKS document alone and
//! verifies the signature of a token `kubectl create token` issued.

use crate::kubectl::{audited_world, BOB_TOKEN};

/// A service account reads both documents (the bootstrap policy's
/// `system:service-account-issuer-discovery`); a user outside `system:serviceaccounts` is
/// refused as kube-apiserver refuses a path; the key set verifies the issuer's tokens.
#[test]
fn service_account_tokens_verify_with_the_published_key_set() {
    let w = audited_world("Metadata");
    let admin = w.kubectl(33);
    let token = admin.ok(&["create", "token", "app", "-n", "prod"]);
    let token = token.trim();
    let sa = w.token_kubeconfig("app", Some(token));
    let k = w.kubectl_as(33, &sa, "app");
    let config: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/.well-known/openid-configuration"]))
            .unwrap();
    let jwks_uri = config["jwks_uri"].as_str().unwrap();
    assert!(jwks_uri.starts_with("https://127.0.0.1:"), "{config}");
    assert!(jwks_uri.ends_with("/openid/v1/jwks"), "{config}");
    assert_eq!(config["issuer"], "https://keyward.local");
    assert_eq!(
        config["response_types_supported"],
        serde_json::json!(["id_token"])
    );
    assert_eq!(
        config["subject_types_supported"],
        serde_json::json!(["public"])
    );
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    let jwks = k.ok(&["get", "--raw", "/openid/v1/jwks"]);

    let script = "import base64, json, sys\n\
        from cryptography.hazmat.primitives import hashes\n\
        from cryptography.hazmat.primitives.asymmetric import ec\n\
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature\n\
        d = lambda x: base64.urlsafe_b64decode(x + '=' * (-len(x) % 4))\n\
        jwks, token = json.loads(sys.argv[1]), sys.argv[2]\n\
        h, p, s = token.split('.')\n\
        kid = json.loads(d(h))['kid']\n\
        [k] = [k for k in jwks['keys'] if k['kid'] == kid]\n\
        assert (k['kty'], k['crv'], k['alg'], k['use']) == ('EC', 'P-256', 'ES256', 'sig'), k\n\
        n = lambda f: int.from_bytes(d(k[f]), 'big')\n\
        key = ec.EllipticCurvePublicNumbers(n('x'), n('y'), ec.SECP256R1()).public_key()\n\
        sig = d(s)\n\
        key.verify(encode_dss_signature(int.from_bytes(sig[:32], 'big'), int.from_bytes(sig[32:], 'big')),\n\
        \x20          (h + '.' + p).encode(), ec.ECDSA(hashes.SHA256()))\n\
        print(json.loads(d(p))['sub'])\n";
    let sub = crate::support::tools::python(&["cryptography"], &["-c", script, &jwks, token], b"");
    assert_eq!(sub.trim(), "system:serviceaccount:prod:app");

    // Served as kube-apiserver serves them: whatever Accept asks, cacheable for an hour.
    let server = jwks_uri
        .strip_prefix("https://")
        .and_then(|r| r.strip_suffix("/openid/v1/jwks"))
        .unwrap();
    let (host, port) = server.rsplit_once(':').unwrap();
    let headers = "import http.client, ssl, sys\n\
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
        c = http.client.HTTPSConnection(sys.argv[1], int(sys.argv[2]), context=ctx, timeout=20)\n\
        c.request('GET', '/openid/v1/jwks', headers={'Authorization': 'Bearer ' + sys.argv[3], 'Accept': 'application/yaml'})\n\
        r = c.getresponse(); body = r.read().decode()\n\
        print(r.status, r.getheader('Content-Type'), r.getheader('Cache-Control'), body == sys.argv[4])\n";
    let got =
        crate::support::tools::python(&["ssl"], &["-c", headers, host, port, token, &jwks], b"");
    assert_eq!(
        got.trim(),
        "200 application/jwk-set+json public, max-age=3600 True"
    );
    let bob = w.token_kubeconfig("bob", Some(BOB_TOKEN));
    let out = w
        .kubectl_as(33, &bob, "bob")
        .run(&["get", "--raw", "/openid/v1/jwks"]);
    assert_eq!(out.code, 1);
    assert!(
        out.err
            .contains(r#"forbidden: User "bob" cannot get path "/openid/v1/jwks""#),
        "{}",
        out.err
    );
    let (audit, events) = w.audit_log();
    assert!(
        events.iter().any(|e| e["requestURI"] == "/openid/v1/jwks"
            && e["user"]["username"] == "system:serviceaccount:prod:app"
            && e["responseStatus"]["code"] == 200),
        "{audit}"
    );
}

/// `--service-account-jwks-uri` changes where the discovery document says the key set is (for
/// verifiers that fetch it from a copy elsewhere); the API still serves the set itself.
#[test]
fn the_jwks_uri_flag_moves_the_key_set_in_the_discovery_document() {
    let w = crate::kubectl::auth_world_with(
        &[],
        &[
            "--service-account-jwks-uri",
            "https://keys.example/cluster/jwks.json",
        ],
    );
    let admin = w.kubectl(33);
    let config: serde_json::Value =
        serde_json::from_str(&admin.ok(&["get", "--raw", "/.well-known/openid-configuration"]))
            .unwrap();
    assert_eq!(
        config["jwks_uri"], "https://keys.example/cluster/jwks.json",
        "{config}"
    );
    let jwks: serde_json::Value =
        serde_json::from_str(&admin.ok(&["get", "--raw", "/openid/v1/jwks"])).unwrap();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");
}
