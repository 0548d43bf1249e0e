//! Table-change notifications: connections subscribe with a `Watch` request and get a
//! `TablesChanged` NOTIFICATION after every committed write to a table they watch.
//!
//! This is what lets a caller (test-server's document cache) keep a copy of rows coherent
//! without asking db-server on every read. The notice is sent when the write's answer is
//! written, i.e. after the commit, to every subscriber on every loop; it is asynchronous, like
//! Redis' client-side caching invalidations: a subscriber may serve its old copy for the time the
//! notice takes to arrive.
//!
//! A writer may name the keys of the rows it changes (`Statement.keys`); when every write of a
//! request does, the notice carries them, so that a cache keyed by row (test-server's
//! documents) drops those rows only instead of the whole table.
//!
//! Which tables a write touched is read from its SQL (`INSERT INTO t`, `REPLACE INTO t`,
//! `UPDATE t`, `DELETE FROM t`); anything else that writes (DDL, a transaction's commit,
//! `WITH … INSERT`) is reported as `"*"`, "any table". Rows changed by triggers in other tables
//! are not named; a subscriber that caches such tables should watch `"*"`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use engine::LoopHandle;

use super::workers::{first_keyword, Work, READ_KEYWORDS};
use protocol::proto::{Statement, TablesChanged};

/// The loops of a db-server, to broadcast changes to every one of them.
#[derive(Debug, Default)]
pub struct Watchers<M> {
    loops: Mutex<Vec<(usize, LoopHandle<M>)>>,
    subscribers: AtomicUsize,
}

impl<M: Send + 'static> Watchers<M> {
    /// An empty registry, shared by the loops of one server.
    pub fn new() -> Arc<Self> {
        Arc::new(Watchers {
            loops: Mutex::new(Vec::new()),
            subscribers: AtomicUsize::new(0),
        })
    }

    /// Registers loop `id` (from its `on_start`).
    pub fn add_loop(&self, id: usize, handle: LoopHandle<M>) {
        match self.loops.lock() {
            Ok(mut l) => l.push((id, handle)),
            Err(p) => p.into_inner().push((id, handle)),
        }
    }

    /// One more (or, with `false`, one fewer) subscribed connection.
    pub fn subscribed(&self, yes: bool) {
        if yes {
            self.subscribers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.subscribers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// True when some connection watches something; writes skip all of this otherwise.
    pub fn any(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Sends `make()` to every loop but `except` (the caller's, which handles it at once).
    pub fn broadcast(&self, except: usize, make: impl Fn() -> M) {
        let loops = match self.loops.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        for (_, handle) in loops.iter().filter(|(id, _)| *id != except) {
            let _ = handle.post(make());
        }
    }
}

/// One connection's subscription: lower-cased table names, or everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Every table.
    All,
    /// These tables.
    Tables(Vec<String>),
}

impl Subscription {
    /// From a `Watch` request's list; `None` for an empty list (no subscription).
    pub fn new(tables: &[String]) -> Option<Self> {
        if tables.is_empty() {
            return None;
        }
        if tables.iter().any(|t| t == "*") {
            return Some(Subscription::All);
        }
        Some(Subscription::Tables(
            tables.iter().map(|t| t.to_ascii_lowercase()).collect(),
        ))
    }

    /// Whether a change naming `changed` concerns this subscriber.
    pub fn wants(&self, changed: &TablesChanged) -> bool {
        match self {
            Subscription::All => true,
            Subscription::Tables(mine) => changed
                .tables
                .iter()
                .any(|t| t == "*" || mine.iter().any(|m| m == t)),
        }
    }
}

/// Tables or keys a notice names one by one; past that a write's tables are `"*"` and its keys
/// none (any row): a client's batch of thousands of steps or keys costs the loop no quadratic
/// work and every subscriber no long notice.
const NAMED_MAX: usize = 64;

/// What a piece of work writes when it succeeds: the tables (none for reads, `"*"` when
/// unknown) and, when every write names the keys of its rows (`Statement.keys`), those keys;
/// the commit index is left for the commit to fill in.
pub fn changes(work: &Work) -> TablesChanged {
    let mut out = TablesChanged::default();
    let mut keyed = true;
    let mut add = |st: &Statement| {
        let Some(t) = written_table(&st.sql) else {
            return;
        };
        if out.tables.first().is_some_and(|f| f == "*") || out.tables.contains(&t) {
            // Already "any table", or named.
        } else if out.tables.len() < NAMED_MAX {
            out.tables.push(t);
        } else {
            // More tables than a notice names one by one: "any table".
            out.tables = vec!["*".to_string()];
        }
        keyed &= !st.keys.is_empty() && out.keys.len() + st.keys.len() <= NAMED_MAX;
        if keyed {
            for k in &st.keys {
                if !out.keys.contains(k) {
                    out.keys.push(k.clone());
                }
            }
        }
    };
    match work {
        Work::Execute(st) => add(st),
        Work::Batch(b) => b.steps.iter().filter_map(|s| s.stmt.as_ref()).for_each(add),
    }
    if !keyed {
        out.keys.clear();
    }
    out
}

/// Adds to a write's notice `tables` it wrote rows of, as the database reported them (a
/// client's write, whose text does not say all it writes: see `Pg::track_written`). The keys
/// the text named are dropped: they no longer cover all that changed.
pub fn add_written(changed: &mut TablesChanged, tables: &[String]) {
    if tables.is_empty() {
        return;
    }
    changed.keys.clear();
    if changed.tables.first().is_some_and(|f| f == "*") {
        return;
    }
    for t in tables {
        if !changed.tables.contains(t) {
            changed.tables.push(t.clone());
        }
    }
    if changed.tables.len() > NAMED_MAX {
        changed.tables = vec!["*".to_string()];
    }
}

/// The table one statement writes: `None` for a read, `"*"` for a write it cannot name.
pub fn written_table(sql: &str) -> Option<String> {
    let keyword = first_keyword(sql);
    let all = || Some("*".to_string());
    if keyword.eq_ignore_ascii_case("WITH") {
        // A common table expression in front of a read or of a write.
        const WRITES: &[&str] = &["INSERT", "REPLACE", "UPDATE", "DELETE"];
        let writes = Words(sql).any(|w| WRITES.iter().any(|k| k.eq_ignore_ascii_case(w)));
        return if writes { all() } else { None };
    }
    if keyword.is_empty()
        || READ_KEYWORDS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(keyword))
    {
        return None;
    }
    let rest = sql.trim_start();
    let rest = &rest[rest.find(keyword).map_or(0, |i| i + keyword.len())..];
    let mut words = Words(rest);
    let upper = keyword.to_ascii_uppercase();
    match upper.as_str() {
        "INSERT" | "REPLACE" | "UPDATE" => {
            let mut w = words.next()?;
            if w.eq_ignore_ascii_case("OR") {
                words.next()?;
                w = words.next()?;
            }
            if upper != "UPDATE" {
                if !w.eq_ignore_ascii_case("INTO") {
                    return all();
                }
                w = words.next()?;
            }
            table_name(w).or_else(all)
        }
        "DELETE" => match words.next() {
            Some(w) if w.eq_ignore_ascii_case("FROM") => {
                words.next().and_then(table_name).or_else(all)
            }
            _ => all(),
        },
        _ => all(),
    }
}

/// Words of SQL text: runs of non-space characters, with a quoted identifier kept whole and
/// `(` or `;` ending a word.
struct Words<'a>(&'a str);

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.0.trim_start();
        if s.is_empty() {
            return None;
        }
        let mut end = 0;
        let mut quote: Option<char> = None;
        for (i, c) in s.char_indices() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '`' || c == '[' => {
                    quote = Some(if c == '[' { ']' } else { c })
                }
                None if c.is_whitespace() || c == '(' || c == ';' => break,
                None => {}
            }
            end = i + c.len_utf8();
        }
        if end == 0 {
            // A lone '(' or ';'.
            end = s.chars().next().map_or(1, char::len_utf8);
        }
        self.0 = &s[end..];
        Some(&s[..end])
    }
}

/// `main."Docs"` → `docs` as SQL compares it: unquoted names lower-cased, the schema dropped.
fn table_name(word: &str) -> Option<String> {
    let last = split_schema(word);
    let unquoted = match last.chars().next()? {
        '"' | '`' | '[' => last.get(1..last.len().saturating_sub(1))?.to_string(),
        _ => last.to_string(),
    };
    let name = unquoted.to_ascii_lowercase();
    (!name.is_empty() && !name.starts_with('(')).then_some(name)
}

fn split_schema(word: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut last = 0;
    for (i, c) in word.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '`' => quote = Some(c),
            None if c == '[' => quote = Some(']'),
            None if c == '.' => last = i + 1,
            None => {}
        }
    }
    &word[last..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sql: &str) -> Option<String> {
        written_table(sql)
    }

    #[test]
    fn names_the_written_table() {
        assert_eq!(
            t("INSERT INTO docs (a) VALUES (1)").as_deref(),
            Some("docs")
        );
        assert_eq!(t("insert into Docs(a) values (1)").as_deref(), Some("docs"));
        assert_eq!(
            t("INSERT OR REPLACE INTO main.docs VALUES (1)").as_deref(),
            Some("docs")
        );
        assert_eq!(
            t("REPLACE INTO \"My Docs\" VALUES (1)").as_deref(),
            Some("my docs")
        );
        assert_eq!(t("UPDATE docs SET a = 1").as_deref(), Some("docs"));
        assert_eq!(
            t("update or ignore [docs] set a = 1").as_deref(),
            Some("docs")
        );
        assert_eq!(
            t(" -- c\n DELETE FROM docs WHERE a = 1").as_deref(),
            Some("docs")
        );
        assert_eq!(t("DELETE FROM docs;").as_deref(), Some("docs"));
    }

    #[test]
    fn reads_are_none_and_unknown_writes_are_everything() {
        assert_eq!(t("SELECT * FROM docs"), None);
        assert_eq!(t("  values (1)"), None);
        assert_eq!(t(""), None);
        assert_eq!(t("CREATE TABLE x (a)").as_deref(), Some("*"));
        assert_eq!(
            t("WITH c AS (SELECT 1) INSERT INTO d SELECT * FROM c").as_deref(),
            Some("*")
        );
        assert_eq!(t("DROP TABLE docs").as_deref(), Some("*"));
        assert_eq!(t("WITH c AS (SELECT 1) SELECT * FROM c"), None);
        assert_eq!(t("INSERT docs VALUES (1)").as_deref(), Some("*"));
    }

    #[test]
    fn keys_are_carried_only_when_every_write_names_its_own() {
        let keyed = |sql: &str, keys: &[&str]| {
            Statement::new(sql, Vec::new()).with_keys(keys.iter().map(|k| k.to_string()).collect())
        };
        let batch = |stmts: Vec<Statement>| {
            Work::Batch(protocol::proto::Batch {
                steps: stmts
                    .into_iter()
                    .map(|st| protocol::proto::BatchStep {
                        stmt: Some(st),
                        ..Default::default()
                    })
                    .collect(),
            })
        };
        let c = changes(&batch(vec![
            keyed("INSERT INTO docs VALUES (1)", &["a"]),
            keyed("UPDATE docs SET x = 1", &["a", "b"]),
            keyed("SELECT 1", &[]),
        ]));
        assert_eq!(
            (c.tables, c.keys),
            (vec!["docs".to_string()], vec!["a".into(), "b".into()])
        );
        let c = changes(&batch(vec![
            keyed("UPDATE docs SET x = 1", &["a"]),
            keyed("DELETE FROM docs", &[]),
        ]));
        assert_eq!(
            (c.tables, c.keys),
            (vec!["docs".to_string()], Vec::<String>::new())
        );
        let c = changes(&Work::Execute(keyed("SELECT * FROM docs", &["a"])));
        assert!(c.tables.is_empty() && c.keys.is_empty());
        // Past the limit: every key, and any table.
        let many: Vec<String> = (0..NAMED_MAX + 1).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let c = changes(&Work::Execute(keyed("UPDATE docs SET x = 1", &refs)));
        assert_eq!(
            (c.tables, c.keys),
            (vec!["docs".to_string()], Vec::<String>::new())
        );
        let c = changes(&batch(
            (0..NAMED_MAX + 1)
                .map(|i| keyed(&format!("DELETE FROM t{i}"), &["a"]))
                .collect(),
        ));
        assert_eq!(c.tables, vec!["*".to_string()]);
    }

    #[test]
    fn subscriptions_match_names_and_everything() {
        let changed = |names: &[&str]| TablesChanged {
            tables: names.iter().map(|s| s.to_string()).collect(),
            commit_index: 1,
            keys: Vec::new(),
        };
        let docs = Subscription::new(&["Docs".into()]).unwrap();
        assert!(docs.wants(&changed(&["docs"])));
        assert!(docs.wants(&changed(&["*"])));
        assert!(!docs.wants(&changed(&["users"])));
        assert_eq!(Subscription::new(&["*".into()]), Some(Subscription::All));
        assert_eq!(Subscription::new(&[]), None);
    }
}
