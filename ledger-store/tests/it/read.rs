use ledger_store::testkit::TestDatabase;
use ledger_store::{Checkpoint, ExpectedVersion, READ_BATCH_MAX, StoreError};
use uuid::Uuid;

use crate::numbered;

#[tokio::test]
async fn read_all_pages_through_the_log_in_commit_order() {
    let db = TestDatabase::new().await;
    let store = db.store();
    let organization = Uuid::new_v4();
    for _ in 0..5 {
        store.append(&numbered(organization, Uuid::new_v4(), ExpectedVersion::NoStream, 3)).await.unwrap();
    }
    let mut checkpoint = Checkpoint::START;
    let mut positions = Vec::new();
    loop {
        let page = store.read_all(checkpoint, 4).await.unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        checkpoint = last.checkpoint();
        positions.extend(page.iter().map(|e| e.global_position));
    }
    assert_eq!(positions.len(), 15);
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));
    let (head_position, _) = store.head().await.unwrap().unwrap();
    assert_eq!(head_position, *positions.last().unwrap());
}

#[tokio::test]
async fn read_all_rejects_a_limit_out_of_bounds() {
    let db = TestDatabase::new().await;
    for limit in [0, READ_BATCH_MAX + 1] {
        let error = db.store().read_all(Checkpoint::START, limit).await.unwrap_err();
        assert!(matches!(&error, StoreError::Invalid { field, .. } if field == "limit"), "{error}");
    }
    assert_eq!(db.store().head().await.unwrap(), None);
}
