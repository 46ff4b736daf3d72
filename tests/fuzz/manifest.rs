//! Manifests (`keyward apply -f`: YAML or JSON, several documents, `kind: List`) and
//! kustomizations (`keyward apply -k`: the kustomization file, env files and resources).

use std::path::Path;

use keyward::manifest::{self, kustomize};
use keyward::store::model;

use crate::harness::{fuzz, quotes_no_value, regressions, Corpus, YAML_WORDS};

const MANIFEST_SEEDS: &[&str] = &[
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: prod\n  labels: {app: web}\n  annotations: {note: x}\ntype: Opaque\ndata:\n  password: czNjcmV0\nstringData:\n  user: admin\nimmutable: true\n",
    "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\ntype: kubernetes.io/tls\ndata: {tls.crt: '', tls.key: ''}\n",
    "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"x\",\"resourceVersion\":\"5\"},\"data\":{\"k\":\"dg==\"}}]}",
    "apiVersion: v1\nkind: Secret\nmetadata: {name: reg}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: e30=\n",
];

/// Secret manifest words (with [`YAML_WORDS`]).
#[rustfmt::skip]
const MANIFEST_WORDS: &[&str] = &[
    "apiVersion", "v1", "kind", "Secret", "List", "items", "metadata", "name", "namespace",
    "labels", "annotations", "resourceVersion", "uid", "managedFields", "creationTimestamp",
    "data", "stringData", "type", "immutable", "Opaque", "kubernetes.io/tls",
    "kubernetes.io/service-account-token", "tls.crt", "czNjcmV0", "=",
    "kubernetes.io/dockerconfigjson", ".dockerconfigjson", "kubernetes.io/basic-auth",
    "username", "password",
];

/// What the round trip compares: the normalized Secret without what printing drops.
fn comparable(mut s: model::Secret) -> model::Secret {
    model::normalize(&mut s);
    s.metadata.managed_fields.clear();
    s
}

#[test]
fn manifests() {
    let corpus = Corpus::text(MANIFEST_SEEDS, &[YAML_WORDS, MANIFEST_WORDS].concat());
    fuzz("manifest", 800, &corpus, |input| {
        let text = String::from_utf8_lossy(input);
        let secrets = match manifest::parse(&text, "fuzz.yaml") {
            Ok(secrets) => secrets,
            Err(e) => {
                let msg = e.to_string();
                assert!(quotes_no_value(&msg), "a value in the error: {msg}");
                return;
            }
        };
        for s in secrets {
            let _ = model::validate(&s);
            // Round trip: what `get -o yaml` prints reads back as the same Secret.
            let s = comparable(s);
            let printed = manifest::to_yaml(&s);
            let back = manifest::parse(&printed, "printed.yaml")
                .unwrap_or_else(|e| panic!("printed Secret does not parse: {e}\n{printed}"));
            assert_eq!(back.len(), 1, "{printed}");
            let back = comparable(back.into_iter().next().expect("one Secret"));
            assert!(back == s, "the round trip changed the Secret:\n{printed}");
            let json = manifest::secret_json(&s);
            let back = manifest::parse(&json, "printed.json")
                .unwrap_or_else(|e| panic!("printed JSON does not parse: {e}\n{json}"));
            assert!(
                comparable(back.into_iter().next().expect("one Secret")) == s,
                "{json}"
            );
        }
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read the kustomize fixture") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Kustomization and env file words (with [`YAML_WORDS`]).
#[rustfmt::skip]
const KUSTOMIZE_WORDS: &[&str] = &[
    "apiVersion", "kustomize.config.k8s.io/v1beta1", "kind", "Kustomization", "namespace",
    "resources", "secretGenerator", "generatorOptions", "name", "literals", "envs", "env",
    "files", "options", "labels", "annotations", "disableNameSuffixHash", "immutable", "type",
    "behavior", "merge", "bases", "patches", "static.yaml", "db.env", "certs/ca.pem",
    "config/settings.json", "ca.crt=", "=", "../", "/etc/hostname", "/dev/zero", "certs",
    "a=b", "#", "export ", "\r",
];

#[test]
fn kustomizations() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/apply/kustomize/basic");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("k");
    copy_dir(&fixture, &dir);
    let files = ["kustomization.yaml", "db.env", "static.yaml"];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("fixture file"))
        .collect();
    let mut seeds = originals.clone();
    // The first byte of an input picks the file it replaces.
    for (i, seed) in seeds.iter_mut().enumerate() {
        seed.insert(0, b'0' + i as u8);
    }
    let corpus = Corpus::new(seeds, &[YAML_WORDS, KUSTOMIZE_WORDS].concat());
    fuzz("kustomization", 400, &corpus, |input| {
        let (which, body) = match input.split_first() {
            Some((b, rest)) => (*b as usize % files.len(), rest),
            None => (0, input),
        };
        for (i, f) in files.iter().enumerate() {
            let content = if i == which { body } else { &originals[i] };
            std::fs::write(dir.join(f), content).expect("write a kustomize file");
        }
        match kustomize::build(&dir) {
            Ok(secrets) => {
                for s in secrets {
                    assert!(!s.source.is_empty());
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    });
}

#[test]
fn regression_inputs() {
    // Inputs that once failed a target of this module (none yet).
    regressions(
        "manifest regressions",
        &[
            b"",
            b"---\n---\n",
            b"kind: List\nitems: [1]",
            b"[]",
            b"{\"kind\":\"Secret\"}",
        ],
        |input| {
            let _ = manifest::parse(&String::from_utf8_lossy(input), "r");
        },
    );
}
