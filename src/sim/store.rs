//! The records one simulated API serves, kept as pre-serialized JSON so pages are built by
//! concatenation.
//!
//! Each record's body is compact JSON with the byte offset of every top-level member, so CareHQ's
//! `attributes` projection is a copy of the selected members, not a parse. Hidden per-record
//! state (CareValidate's `createdAt`/`uid`/case flag, sort keys) lives in [`Meta`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::source::kind::SourceKind;

/// Sort keys, filter keys and hidden state of one record.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    pub created_ms: i64,
    pub modified_ms: i64,
    /// CareValidate's hidden uid (second half of the cursor).
    pub uid: Option<Box<str>>,
    /// Lower-case full name (CareHQ `full_name` sort and `filters-q`).
    pub name_lc: Option<Box<str>>,
    /// Lower-case, trimmed email (marketplace and CareValidate filters).
    pub email_lc: Option<Box<str>>,
    /// CareHQ users: `suspended` is set.
    pub suspended: bool,
    /// CareValidate: a case is assigned, so name, dob and gender are locked.
    pub case_assigned: bool,
}

#[derive(Clone, Debug)]
pub struct Record {
    /// The key as the API exposes it.
    pub key: Box<str>,
    /// Ground truth: the generated human this record describes.
    pub person: u64,
    /// Compact JSON of the full object.
    pub body: Box<[u8]>,
    /// Byte offset of each top-level member (at its key's opening quote).
    pub members: Box<[u32]>,
    pub meta: Meta,
}

impl Record {
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    fn member(&self, i: usize) -> &[u8] {
        let start = self.members[i] as usize;
        let end = match self.members.get(i + 1) {
            Some(next) => *next as usize - 1,
            None => self.body.len() - 1,
        };
        &self.body[start..end]
    }

    /// Appends `{...}` holding only the members `projection` selects. Each member's key is
    /// looked up once (a hash of its encoded key), so a page costs members, not members ×
    /// attributes.
    pub fn project_into(&self, projection: &Projection, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for i in 0..self.members.len() {
            let m = self.member(i);
            if projection.selects(m) {
                if !first {
                    out.push(b',');
                }
                out.extend_from_slice(m);
                first = false;
            }
        }
        out.push(b'}');
    }
}

/// The `"key":` prefix a member of that key starts with.
pub fn member_pattern(key: &str) -> Vec<u8> {
    let mut p = serde_json::to_vec(key).unwrap_or_default();
    p.push(b':');
    p
}

/// A set of top-level keys to copy out of records (CareHQ's `attributes`).
pub struct Projection {
    patterns: std::collections::HashSet<Box<[u8]>>,
}

impl Projection {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Projection {
        Projection {
            patterns: keys
                .into_iter()
                .map(|k| member_pattern(k).into_boxed_slice())
                .collect(),
        }
    }

    /// Whether the member (compact JSON, starting at its key's opening quote) is selected:
    /// its `"key":` prefix, up to the first unescaped quote, is one of the patterns.
    fn selects(&self, member: &[u8]) -> bool {
        let mut i = 1;
        while i < member.len() {
            match member[i] {
                b'\\' => i += 2,
                b'"' => {
                    return member.get(i + 1) == Some(&b':')
                        && self.patterns.contains(&member[..i + 2]);
                }
                _ => i += 1,
            }
        }
        false
    }
}

/// Writes a JSON object member by member, remembering where each member starts.
pub struct ObjWriter {
    buf: Vec<u8>,
    members: Vec<u32>,
}

impl ObjWriter {
    pub fn with_capacity(bytes: usize, members: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes);
        buf.push(b'{');
        ObjWriter {
            buf,
            members: Vec::with_capacity(members),
        }
    }

    pub fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> &mut Self {
        if !self.members.is_empty() {
            self.buf.push(b',');
        }
        self.members.push(self.buf.len() as u32);
        // Writing strings, numbers and string-keyed maps into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, key);
        self.buf.push(b':');
        let _ = serde_json::to_writer(&mut self.buf, value);
        self
    }

    pub fn finish(mut self) -> (Box<[u8]>, Box<[u32]>) {
        self.buf.push(b'}');
        (self.buf.into_boxed_slice(), self.members.into_boxed_slice())
    }
}

/// Renders a JSON object value (member order kept).
pub fn render(map: &serde_json::Map<String, serde_json::Value>) -> (Box<[u8]>, Box<[u32]>) {
    let mut w = ObjWriter::with_capacity(map.len() * 24, map.len());
    for (k, v) in map {
        w.field(k, v);
    }
    w.finish()
}

/// One API's dataset: slots in generation/insertion order, tombstones for deletes.
#[derive(Debug)]
pub struct Store {
    kind: SourceKind,
    pub slots: Vec<Option<Record>>,
    index: HashMap<Box<str>, u32>,
    live: usize,
    /// Bumped on every change; views built for an older version are rebuilt.
    pub version: u64,
}

impl Store {
    pub fn new(kind: SourceKind) -> Self {
        Store {
            kind,
            slots: Vec::new(),
            index: HashMap::new(),
            live: 0,
            version: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn push(&mut self, rec: Record) -> bool {
        let norm: Box<str> = self.kind.normalise_external_id(&rec.key).into();
        if self.index.contains_key(&norm) {
            return false;
        }
        self.index.insert(norm, self.slots.len() as u32);
        self.slots.push(Some(rec));
        self.live += 1;
        self.version += 1;
        true
    }

    pub fn slot_of(&self, key: &str) -> Option<u32> {
        self.index
            .get(self.kind.normalise_external_id(key).as_str())
            .copied()
    }

    pub fn get(&self, key: &str) -> Option<&Record> {
        self.slot_of(key)
            .and_then(|i| self.slots.get(i as usize))
            .and_then(|s| s.as_ref())
    }

    pub fn at(&self, slot: u32) -> Option<&Record> {
        self.slots.get(slot as usize).and_then(|s| s.as_ref())
    }

    /// Replaces the record in `slot`, re-indexing it if its key changed. False (and no change)
    /// if the slot is empty or the new key belongs to another record.
    pub fn replace(&mut self, slot: u32, rec: Record) -> bool {
        let Some(old_key) = self.at(slot).map(|r| r.key.clone()) else {
            return false;
        };
        if old_key != rec.key {
            let new_norm: Box<str> = self.kind.normalise_external_id(&rec.key).into();
            let old_norm = self.kind.normalise_external_id(&old_key);
            if new_norm.as_ref() != old_norm && self.index.contains_key(&new_norm) {
                return false;
            }
            self.index.remove(old_norm.as_str());
            self.index.insert(new_norm, slot);
        }
        self.slots[slot as usize] = Some(rec);
        self.version += 1;
        true
    }

    pub fn remove(&mut self, key: &str) -> Option<Record> {
        let norm = self.kind.normalise_external_id(key);
        let slot = self.index.remove(norm.as_str())?;
        let rec = self.slots.get_mut(slot as usize).and_then(|s| s.take());
        if rec.is_some() {
            self.live -= 1;
            self.version += 1;
        }
        rec
    }

    pub fn live(&self) -> impl Iterator<Item = (u32, &Record)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|r| (i as u32, r)))
    }

    /// Keeps only the first `n` live records (in slot order).
    pub fn truncate_to(&mut self, n: usize) {
        let keys: Vec<Box<str>> = self.live().skip(n).map(|(_, r)| r.key.clone()).collect();
        for k in keys {
            self.remove(&k);
        }
    }
}

/// Query signature → (store version it was built for, slots in order).
type ViewCache = HashMap<String, (u64, Arc<[u32]>)>;

/// A store plus its cache of sorted/filtered views.
#[derive(Debug)]
pub struct SourceCell {
    pub store: RwLock<Store>,
    views: Mutex<ViewCache>,
}

impl SourceCell {
    pub fn new(store: Store) -> Self {
        SourceCell {
            store: RwLock::new(store),
            views: Mutex::new(HashMap::new()),
        }
    }

    /// The slots matching a query, in order, cached by `signature` until the data changes.
    pub fn view(
        &self,
        store: &Store,
        signature: &str,
        build: impl FnOnce(&Store) -> Vec<u32>,
    ) -> Arc<[u32]> {
        if let Ok(views) = self.views.lock()
            && let Some((v, slots)) = views.get(signature)
            && *v == store.version
        {
            return slots.clone();
        }
        let slots: Arc<[u32]> = build(store).into();
        if let Ok(mut views) = self.views.lock() {
            if views.len() > 32 {
                views.clear();
            }
            views.insert(signature.to_string(), (store.version, slots.clone()));
        }
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str) -> Record {
        let mut w = ObjWriter::with_capacity(64, 4);
        w.field("_id", key)
            .field("first_name", "Zoë")
            .field("genders", &["female"])
            .field("ref", "1");
        let (body, members) = w.finish();
        Record {
            key: key.into(),
            person: 0,
            body,
            members,
            meta: Meta::default(),
        }
    }

    #[test]
    fn projection_copies_selected_members() {
        let r = rec("abc");
        let mut out = Vec::new();
        r.project_into(&Projection::new(["_id", "ref"]), &mut out);
        assert_eq!(String::from_utf8_lossy(&out), r#"{"_id":"abc","ref":"1"}"#);
        out.clear();
        r.project_into(&Projection::new(["genders"]), &mut out);
        assert_eq!(String::from_utf8_lossy(&out), r#"{"genders":["female"]}"#);
        out.clear();
        // A key is matched whole, never as a prefix of a longer one.
        r.project_into(&Projection::new(["first", "gender"]), &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "{}");
        out.clear();
        r.project_into(&Projection::new(["genders"]), &mut out);
        assert_eq!(String::from_utf8_lossy(&out), r#"{"genders":["female"]}"#);
        assert_eq!(r.value()["first_name"], "Zoë");
    }

    #[test]
    fn store_index_is_normalised_per_kind() {
        let mut s = Store::new(SourceKind::PaceUsers);
        assert!(s.push(rec("ABC-def")));
        assert!(!s.push(rec("abc-DEF")));
        assert!(s.get(" abc-def ").is_some());
        let mut moved = rec("xyz");
        moved.person = 9;
        assert!(s.replace(0, moved));
        assert!(s.get("abc-def").is_none());
        assert_eq!(s.get("XYZ").map(|r| r.person), Some(9));
        assert!(s.remove("xyz").is_some());
        assert_eq!(s.len(), 0);
    }
}
