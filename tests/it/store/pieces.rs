//! Contract cases: installed pieces (`PieceStore`) and pinned workflow
//! versions. Each case takes a fresh database of the backend under test.

use omniflow::store::{PieceRecord, PieceWrite, StoreError, now_rfc3339};
use serde_json::json;

use super::TestDb;

fn piece(version: &str, digest: &str) -> PieceRecord {
    PieceRecord {
        name: "sentiment".into(),
        version: version.into(),
        digest: digest.into(),
        size: 3,
        info: json!({"description": "scores text", "actions": []}),
        capabilities: json!({"http": [], "secrets": []}),
        builtin: false,
        installed_at: now_rfc3339(),
        installed_by: Some(7),
        replaced_at: None,
    }
}

pub(super) async fn pieces_install_once_refuse_other_bytes_and_keep_pinned_ones(db: TestDb) {
    let store = db.open().await;
    let a = piece("0.1.0", "aaaa");
    assert_eq!(
        store.put_piece(&a, b"AAA", false).await.unwrap(),
        PieceWrite::Installed
    );
    assert_eq!(
        store.put_piece(&a, b"AAA", false).await.unwrap(),
        PieceWrite::Unchanged
    );
    let other = piece("0.1.0", "cccc");
    match store.put_piece(&other, b"CCC", false).await {
        Err(StoreError::Conflict(message)) => {
            assert!(message.contains("sentiment@0.1.0"), "{message}")
        }
        other => panic!("other bytes under one version accepted: {other:?}"),
    }
    store
        .put_piece(&piece("0.2.0", "bbbb"), b"BBB", false)
        .await
        .unwrap();
    let listed = store.list_pieces().await.unwrap();
    let versions: Vec<(&str, &str)> = listed
        .iter()
        .map(|p| (p.version.as_str(), p.digest.as_str()))
        .collect();
    assert_eq!(versions, [("0.1.0", "aaaa"), ("0.2.0", "bbbb")]);
    assert_eq!(listed[0].installed_by, Some(7));
    assert_eq!(listed[0].info["description"], "scores text");
    assert_eq!(
        store.piece_bytes("aaaa").await.unwrap().as_deref(),
        Some(&b"AAA"[..])
    );
    assert_eq!(store.piece_bytes("nope").await.unwrap(), None);

    // A version pinning 0.1.0: removal refused (naming it), pins kept.
    let pins =
        json!({"sentiment@^0.1": {"name": "sentiment", "version": "0.1.0", "digest": "aaaa"}});
    let v1 = store
        .save_pinned_workflow("scored", &json!({"steps": []}), Some(&pins))
        .await
        .unwrap();
    assert_eq!(v1.pins.as_ref(), Some(&pins));
    let same = store
        .save_pinned_workflow("scored", &json!({"steps": []}), Some(&pins))
        .await
        .unwrap();
    assert_eq!(same, v1, "same definition and pins: same version");
    let repinned =
        json!({"sentiment@^0.1": {"name": "sentiment", "version": "0.2.0", "digest": "bbbb"}});
    let v2 = store
        .save_pinned_workflow("scored", &json!({"steps": []}), Some(&repinned))
        .await
        .unwrap();
    assert_eq!(v2.version, v1.version + 1, "new pins: a new version");
    let unpinned = store
        .save_workflow("scored", &json!({"steps": []}))
        .await
        .unwrap();
    assert_eq!(
        unpinned, v2,
        "a save without pins repeats the newest version, its pins included"
    );
    assert_eq!(
        store
            .get_workflow("scored", Some(v1.version))
            .await
            .unwrap()
            .unwrap()
            .pins,
        Some(pins)
    );
    assert_eq!(
        store.workflows_pinning("sentiment", "0.1.0").await.unwrap(),
        ["scored"]
    );
    match store.remove_piece("sentiment", "0.1.0", false).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("scored"), "{message}"),
        other => panic!("a pinned piece was removed: {other:?}"),
    }

    // Replacing keeps the displaced bytes for the versions that pin them.
    assert_eq!(
        store.put_piece(&other, b"CCC", true).await.unwrap(),
        PieceWrite::Replaced
    );
    let replaced = store.list_pieces().await.unwrap();
    assert_eq!(replaced[0].digest, "cccc");
    assert!(replaced[0].replaced_at.is_some());
    assert!(store.piece_bytes("aaaa").await.unwrap().is_some());

    // Forced removal takes the bytes with it; unknown versions are false.
    assert!(
        store
            .remove_piece("sentiment", "0.2.0", true)
            .await
            .unwrap()
    );
    assert_eq!(store.piece_bytes("bbbb").await.unwrap(), None);
    assert!(
        !store
            .remove_piece("sentiment", "0.2.0", true)
            .await
            .unwrap()
    );
    assert_eq!(store.list_pieces().await.unwrap().len(), 1);
}
