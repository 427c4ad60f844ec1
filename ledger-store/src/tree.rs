//! The log as a transparency log: a Merkle tree over every event (RFC 9162 §2.1).
//!
//! The leaves are the events in the order the gap-free readers read them (`(transaction_id,
//! global_position)`, below the read horizon), each leaf the event's stored hash:
//! `leaf = SHA-256(0x00 || hash)`, `node = SHA-256(0x01 || left || right)`, the root of `n`
//! leaves split at the largest power of two below `n`. The `log_tree` projection appends each
//! batch of readable events ([`append_leaves`]) in its runner's transaction, so every event
//! becomes a leaf exactly once and the tree commits with its checkpoint.
//!
//! Storage (`transparency.tree_hashes`) keeps the hash of every complete subtree at every
//! level, at its *stored-hash index* (the layout of Go's `sumdb/tlog`, which `tlog_tiles`
//! ports): leaf `n` adds itself and the `trailing ones of n` subtrees it completes, about two
//! hashes per event, always at the next indexes. They are packed [`CHUNK_HASHES`] to a row, so
//! a batch rewrites the last row and adds a few (not two rows and index entries per event).
//! A batch reads only the O(log n) subtrees of the tree's right edge, and a root, an
//! inclusion proof or a consistency proof reads O(log n) stored hashes in one query
//! ([`with_stored`]): `tlog_tiles` names the indexes it needs, we fetch them, it computes.
//! No rescan ever. Which leaf an event is comes from `transparency.leaf_ranges`, a row per
//! [`RANGE_LEAVES`] leaves (whatever the batches were): the range's first leaf plus the
//! events before it in the range's span of the log.
//!
//! The proofs are RFC 9162's (6962's): a verifier needs only `tlog_tiles::tlog::check_record`
//! / `check_tree`, or any RFC 9162 implementation.

use std::cell::RefCell;
use std::collections::HashMap;

use sqlx::PgConnection;
use tlog_tiles::tlog::{
    self, HashReader, stored_hash_count, stored_hash_index, stored_hashes_for_record_hash, sub_tree_index,
};
pub use tlog_tiles::tlog::{EMPTY_HASH, Hash, check_record, check_tree, node_hash, record_hash};

use crate::error::{Result, StoreError};
use crate::event::Checkpoint;

/// The leaf hash of an event: RFC 9162's hash of a leaf whose data is the event's stored
/// hash (32 bytes).
pub fn leaf_hash(event_hash: &[u8]) -> Hash {
    record_hash(event_hash)
}

/// Parses a tree hash from its base64 text (as checkpoints and proofs write it).
pub fn parse_hash(text: &str) -> Option<Hash> {
    Hash::parse_hash(text).ok()
}

/// A hash from stored bytes.
pub fn hash_from_bytes(bytes: &[u8]) -> Option<Hash> {
    Some(Hash(bytes.try_into().ok()?))
}

/// The root of a tree that grows one leaf at a time, in O(log n) memory: the complete
/// subtrees of its right edge (`verify --checkpoint` recomputes a whole log with it).
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    /// (level, hash), levels strictly decreasing.
    subtrees: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        while let Some(&(top_level, top)) = self.subtrees.last() {
            if top_level != level {
                break;
            }
            self.subtrees.pop();
            hash = node_hash(top, hash);
            level += 1;
        }
        self.subtrees.push((level, hash));
        self.size += 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// RFC 9162's root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut subtrees = self.subtrees.iter().rev();
        let Some(&(_, mut root)) = subtrees.next() else { return EMPTY_HASH };
        for &(_, left) in subtrees {
            root = node_hash(left, root);
        }
        root
    }
}

/// The tree's size and root, as its runner last left it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeHead {
    pub size: u64,
    pub root: Hash,
}

impl TreeHead {
    pub const EMPTY: TreeHead = TreeHead { size: 0, root: EMPTY_HASH };
}

/// The tree's head; the empty tree before the runner's first batch.
pub async fn head(connection: &mut PgConnection) -> Result<TreeHead> {
    read_head(connection, "transparency.tree_head").await
}

/// The head in `table` (the live one, or as `search_path` names it inside the projection's
/// transaction).
async fn read_head(connection: &mut PgConnection, table: &str) -> Result<TreeHead> {
    let row: Option<(i64, Vec<u8>)> =
        sqlx::query_as(&format!("select size, root_hash from {table}")).fetch_optional(&mut *connection).await?;
    let Some((size, root)) = row else { return Ok(TreeHead::EMPTY) };
    let root = hash_from_bytes(&root).ok_or_else(|| StoreError::Tree("the stored root is not 32 bytes".into()))?;
    Ok(TreeHead { size: size as u64, root })
}

/// Stored hashes per row of `tree_hashes`.
pub const CHUNK_HASHES: u64 = 256;
const HASH_BYTES: usize = 32;

/// Which leaf the event at `global_position` is; `None` while the tree has not reached it
/// (or there is no such event). See [`leaf_indexes`].
pub async fn leaf_index(connection: &mut PgConnection, global_position: i64) -> Result<Option<u64>> {
    Ok(leaf_indexes(connection, &[global_position]).await?.get(&global_position).copied())
}

/// Which leaf each event (by global position) is, for those the tree has reached: each
/// range of leaves that holds one of them is numbered once, in log order from its first
/// leaf (at most [`RANGE_LEAVES`] events of the index, in order; bounded by `limit`, so the
/// planner expects few rows and never sorts or compiles the query).
/// Reads the log itself, so `connection` must see every event (not a tenant's share under
/// row-level security).
pub async fn leaf_indexes(connection: &mut PgConnection, positions: &[i64]) -> Result<HashMap<i64, u64>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "with wanted as (select transaction_id, global_position from ledger.events where global_position = any($1)), \
              ranges as (select distinct r.first_leaf, r.leaves, r.first_transaction_id, r.first_position \
                         from wanted w cross join lateral ( \
                             select * from transparency.leaf_ranges r \
                             where (r.last_transaction_id, r.last_position) >= (w.transaction_id, w.global_position) \
                             order by r.last_transaction_id, r.last_position limit 1) r \
                         where (w.transaction_id, w.global_position) >= (r.first_transaction_id, r.first_position)), \
              numbered as (select x.global_position, \
                                  r.first_leaf + row_number() over (partition by r.first_leaf \
                                                                    order by x.transaction_id, x.global_position) - 1 as leaf \
                           from ranges r cross join lateral ( \
                               select transaction_id, global_position from ledger.events x \
                               where (x.transaction_id, x.global_position) >= (r.first_transaction_id, r.first_position) \
                               order by x.transaction_id, x.global_position limit r.leaves) x) \
         select global_position, leaf from numbered where global_position = any($1)",
    )
    .bind(positions)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows.into_iter().map(|(position, leaf)| (position, leaf as u64)).collect())
}

/// Appends `events` (each one's place in the log and stored hash, in log order) as the next
/// leaves, with `search_path` naming the tree's schema (the live one or a rebuild's shadow).
/// Reads the O(log n) subtrees of the right edge, appends about two hashes per leaf to the
/// packed rows (the last one rewritten, new ones inserted), records the batch's range of
/// leaves and the new head: a handful of statements per batch, whatever its size.
pub async fn append_leaves(connection: &mut PgConnection, events: &[(Checkpoint, &[u8])]) -> Result<TreeHead> {
    let before = read_head(connection, "tree_head").await?;
    if events.is_empty() {
        return Ok(before);
    }
    let edge = sub_tree_index(0, before.size, Vec::new());
    let mut known = Known(fetch(connection, "tree_hashes", &edge).await?);
    let start = stored_hash_count(before.size);
    let mut written: Vec<u8> = Vec::with_capacity(events.len() * 2 * HASH_BYTES);
    for (offset, (_, event_hash)) in events.iter().enumerate() {
        let n = before.size + offset as u64;
        let stored = stored_hashes_for_record_hash(n, leaf_hash(event_hash), &known).map_err(tree_error)?;
        let first_index = stored_hash_index(0, n);
        for (step, hash) in stored.into_iter().enumerate() {
            known.0.insert(first_index + step as u64, hash);
            written.extend_from_slice(&hash.0);
        }
    }
    write_hashes(connection, start, &written).await?;
    record_ranges(connection, before.size, events).await?;
    let size = before.size + events.len() as u64;
    let root = tlog::tree_hash(size, &known).map_err(tree_error)?;
    sqlx::query(
        "insert into tree_head (singleton, size, root_hash) values (true, $1, $2) \
         on conflict (singleton) do update set size = excluded.size, root_hash = excluded.root_hash",
    )
    .bind(size as i64)
    .bind(root.0.to_vec())
    .execute(&mut *connection)
    .await?;
    Ok(TreeHead { size, root })
}

/// Leaves per row of `leaf_ranges`: rows cover leaves `k * RANGE_LEAVES` onwards, whatever
/// the batches were (a rebuild writes the same rows), and finding a leaf numbers at most this
/// many events.
pub const RANGE_LEAVES: u64 = 1_024;

/// Records which events leaves `first_leaf..` are: fills the last row of `leaf_ranges` up to
/// [`RANGE_LEAVES`], then adds rows.
async fn record_ranges(connection: &mut PgConnection, first_leaf: u64, events: &[(Checkpoint, &[u8])]) -> Result<()> {
    let mut leaf = first_leaf;
    let mut rest = events;
    while !rest.is_empty() {
        let room = (RANGE_LEAVES - leaf % RANGE_LEAVES) as usize;
        let (part, tail) = rest.split_at(room.min(rest.len()));
        let (first, last) = (part[0].0, part[part.len() - 1].0);
        let row_start = leaf - leaf % RANGE_LEAVES;
        if leaf.is_multiple_of(RANGE_LEAVES) {
            sqlx::query(
                "insert into leaf_ranges (first_leaf, leaves, first_transaction_id, first_position, last_transaction_id, last_position) \
                 values ($1, $2, $3::text::xid8, $4, $5::text::xid8, $6)",
            )
            .bind(row_start as i64)
            .bind(part.len() as i32)
            .bind(first.transaction_id.to_string())
            .bind(first.global_position)
            .bind(last.transaction_id.to_string())
            .bind(last.global_position)
            .execute(&mut *connection)
            .await?;
        } else {
            let updated = sqlx::query(
                "update leaf_ranges set leaves = leaves + $2, last_transaction_id = $3::text::xid8, last_position = $4 \
                 where first_leaf = $1 and first_leaf + leaves = $5",
            )
            .bind(row_start as i64)
            .bind(part.len() as i32)
            .bind(last.transaction_id.to_string())
            .bind(last.global_position)
            .bind(leaf as i64)
            .execute(&mut *connection)
            .await?;
            if updated.rows_affected() != 1 {
                return Err(StoreError::Tree(format!(
                    "the stored leaf ranges do not end at leaf {leaf}; rebuild the log_tree projection"
                )));
            }
        }
        leaf += part.len() as u64;
        rest = tail;
    }
    Ok(())
}

/// Appends `hashes` (32 bytes each) at stored-hash index `start` onwards: the rest of the
/// last row (which must end exactly at `start`), then new rows.
async fn write_hashes(connection: &mut PgConnection, start: u64, hashes: &[u8]) -> Result<()> {
    let mut index = start;
    let mut rest = hashes;
    let room = ((CHUNK_HASHES - index % CHUNK_HASHES) as usize * HASH_BYTES).min(rest.len());
    if !index.is_multiple_of(CHUNK_HASHES) && room > 0 {
        let (head, tail) = rest.split_at(room);
        let updated =
            sqlx::query("update tree_hashes set hashes = hashes || $2 where chunk = $1 and length(hashes) = $3")
                .bind((index / CHUNK_HASHES) as i64)
                .bind(head)
                .bind(((index % CHUNK_HASHES) as usize * HASH_BYTES) as i32)
                .execute(&mut *connection)
                .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::Tree(format!(
                "the stored tree does not end at hash {index}; rebuild the log_tree projection"
            )));
        }
        index += (room / HASH_BYTES) as u64;
        rest = tail;
    }
    let (mut chunks, mut rows) = (Vec::new(), Vec::new());
    for row in rest.chunks(CHUNK_HASHES as usize * HASH_BYTES) {
        chunks.push((index / CHUNK_HASHES) as i64);
        rows.push(row);
        index += (row.len() / HASH_BYTES) as u64;
    }
    if !chunks.is_empty() {
        sqlx::query("insert into tree_hashes (chunk, hashes) select * from unnest($1::int8[], $2::bytea[])")
            .bind(&chunks)
            .bind(&rows)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Hashes already known by stored-hash index.
struct Known(HashMap<u64, Hash>);

impl HashReader for Known {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog::Error> {
        indexes.iter().map(|index| self.0.get(index).copied().ok_or(tlog::Error::IndexesNotInTree)).collect()
    }
}

fn tree_error(error: tlog::Error) -> StoreError {
    StoreError::Tree(format!(
        "the stored tree is incomplete or inconsistent ({error}); rebuild the log_tree projection"
    ))
}

async fn fetch(connection: &mut PgConnection, table: &str, indexes: &[u64]) -> Result<HashMap<u64, Hash>> {
    let mut chunks: Vec<i64> = indexes.iter().map(|index| (*index / CHUNK_HASHES) as i64).collect();
    chunks.sort_unstable();
    chunks.dedup();
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!("select chunk, hashes from {table} where chunk = any($1)"))
        .bind(&chunks)
        .fetch_all(&mut *connection)
        .await?;
    let rows: HashMap<u64, Vec<u8>> = rows.into_iter().map(|(chunk, hashes)| (chunk as u64, hashes)).collect();
    let mut found = HashMap::with_capacity(indexes.len());
    for index in indexes {
        let at = (*index % CHUNK_HASHES) as usize * HASH_BYTES;
        if let Some(hash) = rows.get(&(*index / CHUNK_HASHES)).and_then(|row| row.get(at..at + HASH_BYTES)) {
            found.insert(*index, Hash(hash.try_into().expect("32 bytes")));
        }
    }
    Ok(found)
}

/// The stored hashes a computation asks for: on its first pass it records the indexes (and
/// gets zeros: `tlog_tiles` asks once, before it computes, and its asking does not depend on
/// the values); then they are fetched in one query and it runs again on them.
#[derive(Default)]
struct TwoPass {
    wanted: RefCell<Vec<u64>>,
    fetched: Option<Known>,
}

impl HashReader for TwoPass {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog::Error> {
        match &self.fetched {
            Some(known) => known.read_hashes(indexes),
            None => {
                self.wanted.borrow_mut().extend_from_slice(indexes);
                Ok(vec![Hash::default(); indexes.len()])
            }
        }
    }
}

/// Runs `compute` over the stored tree (`transparency.tree_hashes`), reading what it needs in
/// one query (however many times it asks).
async fn with_stored<T>(
    connection: &mut PgConnection,
    compute: impl Fn(&TwoPass) -> std::result::Result<T, tlog::Error>,
) -> Result<T> {
    let mut reader = TwoPass::default();
    compute(&reader).map_err(tree_error)?;
    let mut wanted = reader.wanted.take();
    wanted.sort_unstable();
    wanted.dedup();
    reader.fetched = Some(Known(fetch(connection, "transparency.tree_hashes", &wanted).await?));
    compute(&reader).map_err(tree_error)
}

/// Checks `size` against the stored tree: 1 to its size (0 allowed with `allow_empty`).
async fn checked_size(connection: &mut PgConnection, field: &str, size: u64, allow_empty: bool) -> Result<TreeHead> {
    if size == 0 && !allow_empty {
        return Err(StoreError::invalid(field, "must be at least 1"));
    }
    let head = head(connection).await?;
    if size > head.size {
        return Err(StoreError::NotInTree(format!(
            "{field}: the log's tree has {} leaves, not {size} (yet)",
            head.size
        )));
    }
    Ok(head)
}

/// The root of the tree's first `size` leaves.
pub async fn root_at(connection: &mut PgConnection, size: u64) -> Result<Hash> {
    checked_size(connection, "tree_size", size, true).await?;
    with_stored(connection, |reader| tlog::tree_hash(size, reader)).await
}

/// An RFC 9162 inclusion proof (audit path) and the root it leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct Inclusion {
    pub proof: Vec<Hash>,
    pub root: Hash,
}

/// The inclusion proof of leaf `leaf` in the tree of `size` leaves, with that tree's root:
/// one read of the stored hashes for both.
pub async fn inclusion_proof(connection: &mut PgConnection, size: u64, leaf: u64) -> Result<Inclusion> {
    checked_size(connection, "tree_size", size, false).await?;
    if leaf >= size {
        return Err(StoreError::NotInTree(format!(
            "tree_size: the event is leaf {leaf}, so it is not in the tree of {size}: ask for a tree_size above {leaf}"
        )));
    }
    with_stored(connection, |reader| {
        Ok(Inclusion { proof: tlog::prove_record(size, leaf, reader)?, root: tlog::tree_hash(size, reader)? })
    })
    .await
}

/// Inclusion proofs of several leaves in the tree of `size` leaves, every hash they need
/// read in one query (an evidence pack's thousand events cost one round trip, not a thousand).
pub async fn inclusion_proofs(connection: &mut PgConnection, size: u64, leaves: &[u64]) -> Result<Vec<Vec<Hash>>> {
    checked_size(connection, "tree_size", size, false).await?;
    if let Some(leaf) = leaves.iter().find(|leaf| **leaf >= size) {
        return Err(StoreError::NotInTree(format!("tree_size: leaf {leaf} is not in the tree of {size}")));
    }
    with_stored(connection, |reader| leaves.iter().map(|leaf| tlog::prove_record(size, *leaf, reader)).collect()).await
}

/// An RFC 9162 consistency proof and the roots of both trees.
#[derive(Debug, Clone, PartialEq)]
pub struct Consistency {
    pub proof: Vec<Hash>,
    pub from_root: Hash,
    pub to_root: Hash,
}

/// The consistency proof that the tree of `from` leaves is a prefix of the tree of `to`,
/// with both roots: one read of the stored hashes for all three.
pub async fn consistency_proof(connection: &mut PgConnection, from: u64, to: u64) -> Result<Consistency> {
    checked_size(connection, "to", to, false).await?;
    if from == 0 {
        return Err(StoreError::invalid("from", "must be at least 1"));
    }
    if from > to {
        return Err(StoreError::NotInTree(format!(
            "from: no tree of {from} leaves is a prefix of the tree of {to}: ask for from={to}&to={from}"
        )));
    }
    with_stored(connection, |reader| {
        Ok(Consistency {
            proof: tlog::prove_tree(to, from, reader)?,
            from_root: tlog::tree_hash(from, reader)?,
            to_root: tlog::tree_hash(to, reader)?,
        })
    })
    .await
}

/// The stored leaf hashes of leaves `first..first + count` (fewer where the tree ends).
pub async fn stored_leaves(connection: &mut PgConnection, first: u64, count: u64) -> Result<Vec<Hash>> {
    let indexes: Vec<u64> = (first..first + count).map(|n| stored_hash_index(0, n)).collect();
    let found = fetch(connection, "transparency.tree_hashes", &indexes).await?;
    Ok(indexes.iter().map_while(|index| found.get(index).copied()).collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A whole tree in memory, stored as the projection stores it.
    fn stored(leaves: &[Hash]) -> Known {
        let mut known = Known(HashMap::new());
        for (n, leaf) in leaves.iter().enumerate() {
            let hashes = stored_hashes_for_record_hash(n as u64, *leaf, &known).unwrap();
            for (step, hash) in hashes.into_iter().enumerate() {
                known.0.insert(stored_hash_index(0, n as u64) + step as u64, hash);
            }
        }
        known
    }

    /// RFC 6962's test leaves (certificate-transparency, transparency-dev/merkle).
    const REFERENCE_LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    fn hex_hash(text: &str) -> Hash {
        Hash(hex::decode(text).unwrap().try_into().unwrap())
    }

    /// RFC 6962's test leaves and the roots of the first 1 to 8 of them, as published with
    /// the reference implementations (certificate-transparency, transparency-dev/merkle).
    #[test]
    fn roots_match_the_reference_vectors() {
        let inputs = REFERENCE_LEAVES;
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut frontier = Frontier::default();
        let mut leaves = Vec::new();
        for (input, root) in inputs.iter().zip(roots) {
            let leaf = record_hash(input);
            leaves.push(leaf);
            frontier.push(leaf);
            assert_eq!(frontier.root(), hex_hash(root), "root of {} leaves", leaves.len());
            assert_eq!(tlog::tree_hash(leaves.len() as u64, &stored(&leaves)).unwrap(), hex_hash(root));
        }
        assert_eq!(Frontier::default().root(), EMPTY_HASH);
        assert_eq!(EMPTY_HASH, hex_hash("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    }

    /// RFC 6962's inclusion and consistency proofs for the reference leaves.
    #[test]
    fn proofs_match_the_reference_vectors() {
        let inputs = REFERENCE_LEAVES;
        let leaves: Vec<Hash> = inputs.iter().map(|input| record_hash(input)).collect();
        let tree = stored(&leaves);
        // Leaf 0 in the tree of 8 (transparency-dev/merkle's inclusion vectors).
        let proof = tlog::prove_record(8, 0, &tree).unwrap();
        let expected = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(proof, expected.map(hex_hash).to_vec());
        // Leaf 5 in the tree of 8.
        let proof = tlog::prove_record(8, 5, &tree).unwrap();
        let expected = [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ];
        assert_eq!(proof, expected.map(hex_hash).to_vec());
        // The tree of 1 is a prefix of the tree of 8; of 6 in 8; of 2 in 5.
        let proof = tlog::prove_tree(8, 1, &tree).unwrap();
        let expected = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(proof, expected.map(hex_hash).to_vec());
        let proof = tlog::prove_tree(8, 6, &tree).unwrap();
        let expected = [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ];
        assert_eq!(proof, expected.map(hex_hash).to_vec());
        let proof = tlog::prove_tree(5, 2, &tree).unwrap();
        let expected = [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ];
        assert_eq!(proof, expected.map(hex_hash).to_vec());
    }

    proptest! {
        /// For any tree, the stored layout, the frontier and the proofs agree: every leaf's
        /// audit path and every prefix's consistency proof check against the roots.
        #[test]
        fn every_proof_checks_against_the_roots(size in 1u64..70, seed in any::<u64>()) {
            let leaves: Vec<Hash> = (0..size).map(|n| record_hash(&(seed ^ n).to_be_bytes())).collect();
            let tree = stored(&leaves);
            let mut frontier = Frontier::default();
            let mut roots = Vec::new();
            for leaf in &leaves {
                frontier.push(*leaf);
                roots.push(frontier.root());
            }
            for t in 1..=size {
                let root = roots[t as usize - 1];
                prop_assert_eq!(tlog::tree_hash(t, &tree).unwrap(), root);
                for n in 0..t {
                    let proof = tlog::prove_record(t, n, &tree).unwrap();
                    prop_assert!(check_record(&proof, t, root, n, leaves[n as usize]).is_ok());
                    let wrong = record_hash(b"not this leaf");
                    prop_assert!(check_record(&proof, t, root, n, wrong).is_err());
                }
                for from in 1..=t {
                    let proof = tlog::prove_tree(t, from, &tree).unwrap();
                    prop_assert!(check_tree(&proof, t, root, from, roots[from as usize - 1]).is_ok());
                }
            }
        }
    }
}
