use super::*;
use serde_json::json;

#[test]
fn rfc6902_appendix_a() {
    let cases: Vec<Value> = serde_json::from_str(include_str!(
        "../../../tests/data/kube/rfc6902_appendix_a.json"
    ))
    .unwrap();
    assert_eq!(cases.len(), 15);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let got = json_patch(&c["doc"], &c["patch"], false);
        match c.get("expected") {
            Some(want) => assert_eq!(&got.unwrap(), want, "{name}"),
            None => match got {
                Err(KubeError::Unprocessable(m)) => assert_eq!(m, c["error"], "{name}"),
                other => panic!("{name}: {other:?}"),
            },
        }
    }
}

#[test]
fn rfc7386_appendix_a() {
    let cases: Vec<Value> = serde_json::from_str(include_str!(
        "../../../tests/data/kube/rfc7386_appendix_a.json"
    ))
    .unwrap();
    assert_eq!(cases.len(), 15);
    for c in cases {
        assert_eq!(merge(&c[0], &c[1], false).unwrap(), c[2], "{c}");
    }
    // kube-apiserver's field checks decode a merge patch into a map first.
    match merge(&json!({}), &json!(["a"]), true) {
        Err(KubeError::BadRequest(m)) => assert_eq!(
            m,
            "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(merge(&json!({}), &Value::Null, true).is_ok());
}

#[test]
fn json_patch_errors() {
    let doc =
        json!({"data": {"a": "YQ=="}, "metadata": {"labels": {"app.kubernetes.io/name": "x"}}});
    // ~1 escapes a slash in a label key.
    let out = json_patch(
        &doc,
        &json!([{"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1name"}]),
        false,
    )
    .unwrap();
    assert_eq!(out["metadata"]["labels"], json!({}));
    assert_eq!(
        json_patch(&doc, &json!([{"op": "remove", "path": "/data/x"}]), false)
            .unwrap_err()
            .to_string(),
        "error in remove for path: '/data/x': Unable to remove nonexistent key: x: missing value"
    );
    for (patch, strict, want) in [
        (json!({"op": "add"}), false, "json: cannot unmarshal object into Go value of type jsonpatch.Patch"),
        (json!({"op": "add"}), true, "error decoding patch: json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp"),
        (json!(["x"]), true, "error decoding patch: json: cannot unmarshal string into Go value of type handlers.jsonPatchOp"),
        (json!([{"op": 1}]), true, "error decoding patch: json: cannot unmarshal number into Go struct field jsonPatchOp.op of type string"),
    ] {
        match json_patch(&doc, &patch, strict) {
            Err(KubeError::BadRequest(m)) => assert_eq!(m, want),
            other => panic!("{other:?}"),
        }
    }
    let many: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
        .map(|_| json!({"op": "test", "path": "/data"}))
        .collect();
    match json_patch(&doc, &Value::Array(many), false) {
        Err(KubeError::TooLarge(m)) => assert_eq!(
            m,
            "The allowed maximum operations in a JSON patch is 10000, got 10001"
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        json_patch(&doc, &json!([{"op": "frob", "path": "/data"}]), false),
        Err(KubeError::Unprocessable(_))
    ));
    // json-patch v4 adds nothing to the whole document, and replaces it with an object or
    // a list only.
    for patch in [
        json!([{"op": "add", "path": "", "value": "x"}]),
        json!([{"op": "add", "value": {"data": {}}}]),
        json!([{"op": "replace", "path": "", "value": "x"}]),
    ] {
        assert!(
            matches!(
                json_patch(&doc, &patch, true),
                Err(KubeError::Unprocessable(_))
            ),
            "{patch}"
        );
    }
    let whole = json_patch(
        &doc,
        &json!([{"op": "replace", "path": "", "value": {"data": {}}}]),
        true,
    )
    .unwrap();
    assert_eq!(whole, json!({"data": {}}));
    // copy and move
    let out = json_patch(
        &doc,
        &json!([{"op": "copy", "from": "/data/a", "path": "/data/b"},
                {"op": "move", "from": "/data/a", "path": "/data/c"}]),
        false,
    )
    .unwrap();
    assert_eq!(out["data"], json!({"b": "YQ==", "c": "YQ=="}));
}

fn live() -> Value {
    json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {
            "name": "s", "namespace": "default", "uid": "u", "resourceVersion": "5",
            "labels": {"a": "1", "b": "2"},
            "finalizers": ["example.com/one"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "c1", "uid": "u1"},
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "c2", "uid": "u2"}
            ],
            "managedFields": [{"manager": "m", "operation": "Update"}]
        },
        "data": {"x": "eA==", "y": "eQ=="},
        "type": "Opaque"
    })
}

#[test]
fn strategic_merge_maps_nulls_and_string_data() {
    let out = strategic_merge(
        &live(),
        &json!({"metadata": {"labels": {"a": null, "c": "3", "zz": null}},
                "data": {"y": null},
                "stringData": {"x": "new", "gone": null}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    // stringData overwrites data and is dropped; a null for a key the target lacks is dropped.
    assert_eq!(out["data"], json!({"x": "bmV3"}));
    assert!(out.get("stringData").is_none());
    // kubectl apply removing a stringData key: data keeps it (upstream's behaviour).
    let out = strategic_merge(&live(), &json!({"stringData": {"y": null}})).unwrap();
    assert_eq!(out["data"], json!({"x": "eA==", "y": "eQ=="}));
    // Scalars are replaced.
    let out = strategic_merge(&live(), &json!({"type": "kubernetes.io/tls"})).unwrap();
    assert_eq!(out["type"], "kubernetes.io/tls");
    assert!(matches!(
        strategic_merge(&live(), &json!([1])),
        Err(KubeError::BadRequest(_))
    ));
}

#[test]
fn strategic_merge_directives() {
    let out = strategic_merge(
        &live(),
        &json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
    let out = strategic_merge(
        &live(),
        &json!({"metadata": {"labels": {"$patch": "delete"}}}),
    )
    .unwrap();
    assert!(out["metadata"].get("labels").is_none());
    let out = strategic_merge(
        &live(),
        &json!({"data": {"$patch": "replace", "z": "eg=="}}),
    )
    .unwrap();
    assert_eq!(out["data"], json!({"z": "eg=="}));
    assert!(matches!(
        strategic_merge(&live(), &json!({"data": {"$patch": "frob"}})),
        Err(KubeError::Storage(_))
    ));
}

/// Keys that start with `$` but are no directive are merged as fields (validation then refuses
/// `data[$x]` or a label `$x`, as kube-apiserver's); a field the original lacks takes the
/// patch's value without its nulls and without maps holding `$patch` (removeDirectives).
#[test]
fn strategic_merge_keys_that_are_not_directives() {
    let out = strategic_merge(&live(), &json!({"data": {"$bogus": "eA=="}})).unwrap();
    assert_eq!(out["data"]["$bogus"], "eA==");
    let out = strategic_merge(&live(), &json!({"metadata": {"labels": {"$foo": "x"}}})).unwrap();
    assert_eq!(out["metadata"]["labels"]["$foo"], "x");
    let mut bare = live();
    bare["metadata"].as_object_mut().unwrap().remove("labels");
    let out = strategic_merge(
        &bare,
        &json!({"metadata": {"labels": {"$foo": "x", "n": null}}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"$foo": "x"}));
    let out = strategic_merge(
        &bare,
        &json!({"metadata": {"labels": {"$patch": "replace", "a": "b"}}}),
    )
    .unwrap();
    assert!(out["metadata"].get("labels").is_none(), "{out}");
    let out = strategic_merge(
        &bare,
        &json!({"metadata": {"annotations": {"k": "v", "deeper": {"$patch": "delete"}}}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["annotations"], json!({"k": "v"}));
}

#[test]
fn strategic_merge_finalizers_and_owner_references() {
    let out = strategic_merge(
        &live(),
        &json!({"metadata": {
            "finalizers": ["example.com/two", "example.com/one"],
            "$setElementOrder/finalizers": ["example.com/two", "example.com/one"]}}),
    )
    .unwrap();
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["example.com/two", "example.com/one"])
    );
    let out = strategic_merge(
        &live(),
        &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/one"]}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!([]));
    // What is left comes out in order, without repeats (strategicpatch's deleteFromSlice).
    let mut three = live();
    three["metadata"]["finalizers"] = json!(["z.io/c", "a.io/b", "z.io/c", "m.io/x"]);
    let out = strategic_merge(
        &three,
        &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["m.io/x"]}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["a.io/b", "z.io/c"]));
    let out = strategic_merge(
        &live(),
        &json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "$patch": "delete"},
            {"uid": "u2", "name": "renamed"},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "c3", "uid": "u3"}]}}),
    )
    .unwrap();
    let refs = out["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(
        refs.iter().map(|r| r["uid"].clone()).collect::<Vec<_>>(),
        [json!("u2"), json!("u3")]
    );
    assert_eq!(refs[0]["name"], "renamed");
    assert_eq!(refs[0]["kind"], "ConfigMap");
    assert!(matches!(
        strategic_merge(
            &live(),
            &json!({"metadata": {"ownerReferences": [{"name": "x"}]}})
        ),
        Err(KubeError::BadRequest(_))
    ));
    // managedFields has no strategy: replaced.
    let out = strategic_merge(
        &live(),
        &json!({"metadata": {"managedFields": [{"manager": "n", "operation": "Apply"}]}}),
    )
    .unwrap();
    assert_eq!(
        out["metadata"]["managedFields"],
        json!([{"manager": "n", "operation": "Apply"}])
    );
}

#[test]
fn a_map_directive_other_than_replace_or_delete_is_upstreams_500() {
    let live = json!({"data": {"k": "dg=="}});
    for (directive, shown) in [
        (json!("merge"), "merge"),
        (json!("bogus"), "bogus"),
        (json!(5), "%!s(int64=5)"),
        (json!(null), "%!s(<nil>)"),
        (json!({"x": "secret"}), "<redacted>"),
    ] {
        let patch = json!({"data": {"$patch": directive, "k": "c2VjcmV0"}});
        match strategic_merge(&live, &patch) {
            Err(KubeError::Storage(m)) => {
                assert_eq!(m, format!("unknown patch type: {shown} in map: <redacted>"));
                assert!(!m.contains("c2VjcmV0") && !m.contains("secret"), "{m}");
            }
            other => panic!("{directive}: {other:?}"),
        }
    }
}
