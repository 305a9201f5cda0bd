//! Schedule files: TOML text → validated entries, every problem with its
//! file and line.
//!
//! Two stages: `parse_str` is pure (text in, entries and diagnostics out);
//! `load_paths` does the I/O (expands directories, reads files) and the
//! cross-file check for duplicate names.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::entry::{self, Context, DEFAULT_KEYS, ENTRY_KEYS, Entry, Origin, RawEntry};

/// One finding about a schedule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub entry: Option<String>,
    pub message: String,
    pub warning: bool,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: not from a file (the database), so no line to give.
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}: ", self.file, self.line)?;
        }
        if self.warning {
            f.write_str("warning: ")?;
        }
        if let Some(e) = &self.entry {
            write!(f, "entry '{e}': ")?;
        }
        f.write_str(&self.message)
    }
}

/// What a set of schedule files holds.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    pub entries: Vec<Entry>,
    pub diagnostics: Vec<Diagnostic>,
    /// Every entry name defined, valid or not, for the duplicate check.
    pub names: Vec<(String, Origin)>,
    /// Something worth saying once that is not a problem: no schedule
    /// files were found.
    pub notice: Option<String>,
}

/// Where schedule files are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulePaths {
    pub paths: Vec<PathBuf>,
    /// Named by the user (command line, `[schedules] paths`,
    /// `SQSBEAT_SCHEDULES_PATHS`): each must exist. The default
    /// `./schedules` may be absent.
    pub named: bool,
}

impl SchedulePaths {
    /// Paths the user named: each must exist.
    pub fn named(paths: Vec<PathBuf>) -> Self {
        SchedulePaths { paths, named: true }
    }

    fn display(&self) -> String {
        let shown: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        shown.join(", ")
    }
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// Why schedule paths could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: no such file or directory")]
    Missing(String),
}

/// Byte offsets where lines start, so each lookup is a binary search:
/// counting newlines per entry made loading quadratic (28 s for 10 000
/// entries).
struct Lines(Vec<usize>);

impl Lines {
    fn new(src: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(
                src.bytes()
                    .enumerate()
                    .filter(|(_, b)| *b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        Lines(starts)
    }

    /// 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

/// Parses one schedule file's text. `file` names it in diagnostics.
///
/// A file of the usual shape (`[defaults]` and `[entries.NAME]` sections)
/// is parsed a section at a time: the whole file's TOML tree (its tokens,
/// parse events and tables, held at once) was a heap peak of 473 MB for a
/// 13.8 MB file of 100 000 entries, and the allocator kept that memory
/// after it was freed. Any other shape, and any file a section of which
/// does not parse, is parsed whole, so that every diagnostic is the one
/// the whole file gives.
pub fn parse_str(file: &str, src: &str, ctx: &Context) -> Loaded {
    let lines = Lines::new(src);
    if let Some(sections) = sections(src)
        && let Some(out) = parse_sections(file, src, &lines, ctx, &sections)
    {
        return out;
    }
    parse_whole(file, src, &lines, ctx)
}

/// The whole file as one TOML document.
fn parse_whole(file: &str, src: &str, lines: &Lines, ctx: &Context) -> Loaded {
    let mut p = FileParser::new(file, lines, ctx);
    let root = match DeTable::parse(src) {
        Ok(t) => t.into_inner(),
        Err(e) => {
            let line = e.span().map_or(1, |s| lines.line(s.start));
            let message = format!("invalid TOML: {}", e.message().trim());
            p.error(line, None, message);
            return p.out;
        }
    };
    let (defaults, entries) = p.top_level(root);
    match entries {
        Some(entries) => {
            for (key, value) in entries {
                p.entry(key, value, &defaults);
            }
        }
        None => p.no_entries(),
    }
    p.out.diagnostics.sort_by_key(|d| d.line);
    p.out
}

/// The file a section at a time, `[defaults]` first (it applies to every
/// entry, wherever it is). `None` when a section does not parse on its
/// own: the whole file's parse then reports it.
fn parse_sections(
    file: &str,
    src: &str,
    lines: &Lines,
    ctx: &Context,
    sections: &Sections,
) -> Option<Loaded> {
    let mut p = FileParser::new(file, lines, ctx);
    // Sized once: grown by doubling, the vectors of 100 000 entries held
    // up to twice the room they needed.
    p.out.entries.reserve_exact(sections.entries.len());
    p.out.names.reserve_exact(sections.entries.len());
    // The comments before the first header belong to no section, but
    // TOML still has rules for them (no control characters, no lone
    // carriage return) that the whole file's parse enforces.
    DeTable::parse(&src[..sections.head]).ok()?;
    let mut defaults = RawEntry::default();
    if let Some(range) = &sections.defaults {
        let root = DeTable::parse(&src[range.clone()]).ok()?.into_inner();
        p.at.base = range.start;
        (defaults, _) = p.top_level(root);
    }
    for range in &sections.entries {
        let root = DeTable::parse(&src[range.clone()]).ok()?.into_inner();
        p.at.base = range.start;
        // `[entries.NAME]` and its sub-tables: one key, `entries`,
        // holding one table, NAME.
        for (_, value) in root {
            let DeValue::Table(entries) = value.into_inner() else {
                return None;
            };
            for (key, value) in entries {
                p.entry(key, value, &defaults);
            }
        }
    }
    if sections.entries.is_empty() {
        p.no_entries();
    }
    p.out.diagnostics.sort_by_key(|d| d.line);
    Some(p.out)
}

/// Where a file's sections are, by byte range: its `[defaults]` and each
/// `[entries.NAME]`, each running from its header to the next section's.
/// A range holds every header of its section (`[entries.NAME.kwargs]` as
/// well), so that TOML's rules on defining a table twice apply within it
/// as they do in the whole file.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sections {
    /// Where the first header starts: before it, only comments.
    head: usize,
    defaults: Option<Range<usize>>,
    entries: Vec<Range<usize>>,
}

/// Which section a table header opens.
#[derive(Debug, PartialEq, Eq)]
enum Section<'s> {
    Defaults,
    Entry(Cow<'s, str>),
}

/// The sections of a file whose every table header is `[defaults...]` or
/// `[entries.NAME...]`, with nothing but comments before the first, and
/// each section's headers next to each other. `None` for anything else
/// (key/values at the top level, `[entries]` itself, arrays of tables, a
/// section split in two): the file is then parsed whole. The scan only
/// lexes; a header is a `[` that starts a line outside any array or inline
/// table. It need not judge bad syntax: a section that does not parse on
/// its own sends the file to the whole parse too.
fn sections(src: &str) -> Option<Sections> {
    use toml_parser::lexer::TokenKind as K;
    let source = toml_parser::Source::new(src);
    let mut tokens = source.lex();
    let mut out = Sections::default();
    // The section being read, and where it started.
    let mut open: Option<(Section<'_>, usize)> = None;
    // Sections seen, to send a file whose section is split to the whole
    // parse; a hash collision only does the same.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut depth = 0usize;
    let mut line_start = true;
    while let Some(t) = tokens.next() {
        match t.kind() {
            K::Newline => {
                line_start |= depth == 0;
                continue;
            }
            K::Whitespace | K::Comment => continue,
            K::Eof => break,
            K::LeftSquareBracket if depth == 0 && line_start => {
                let start = t.span().start();
                let section = header(&source, &mut tokens, t.span().end())?;
                if open.as_ref().is_some_and(|(s, _)| *s == section) {
                    line_start = false;
                    continue;
                }
                match open.take() {
                    Some((s, from)) => out.close(s, from..start),
                    None => out.head = start,
                }
                let id = match &section {
                    Section::Defaults => hash_name(None),
                    Section::Entry(name) => hash_name(Some(name)),
                };
                if !seen.insert(id) {
                    return None;
                }
                open = Some((section, start));
            }
            K::LeftSquareBracket | K::LeftCurlyBracket => depth += 1,
            K::RightSquareBracket | K::RightCurlyBracket => depth = depth.checked_sub(1)?,
            // A key/value before the first header.
            _ if open.is_none() => return None,
            _ => {}
        }
        line_start = false;
    }
    match open {
        Some((s, from)) => out.close(s, from..src.len()),
        None => out.head = src.len(),
    }
    Some(out)
}

impl Sections {
    fn close(&mut self, section: Section<'_>, range: Range<usize>) {
        match section {
            Section::Defaults => self.defaults = Some(range),
            Section::Entry(_) => self.entries.push(range),
        }
    }
}

fn hash_name(name: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// The section a table header opens, its `[` just read (ending at
/// `after`): `None` if it is an array of tables, a header of another
/// table, or not a header the scan can read.
fn header<'s>(
    source: &toml_parser::Source<'s>,
    tokens: &mut toml_parser::lexer::Lexer<'s>,
    after: usize,
) -> Option<Section<'s>> {
    use toml_parser::lexer::TokenKind as K;
    let mut keys: Vec<Cow<'s, str>> = Vec::new();
    let mut first = true;
    for t in tokens.by_ref() {
        match t.kind() {
            // `[[`: an array of tables.
            K::LeftSquareBracket if first && t.span().start() == after => return None,
            K::Whitespace | K::Dot => {}
            K::Atom | K::BasicString | K::LiteralString => {
                let mut key = Cow::Borrowed("");
                let mut errors: Vec<toml_parser::ParseError> = Vec::new();
                source.get(t)?.decode_key(&mut key, &mut errors);
                if !errors.is_empty() {
                    return None;
                }
                keys.push(key);
            }
            K::RightSquareBracket => break,
            _ => return None,
        }
        first = false;
    }
    let mut keys = keys.into_iter();
    match (keys.next()?.as_ref(), keys.next()) {
        ("defaults", _) => Some(Section::Defaults),
        ("entries", Some(name)) => Some(Section::Entry(name)),
        _ => None,
    }
}

/// Turns offsets within the text being parsed (the whole file, or one
/// section of it) into the file's lines.
#[derive(Clone, Copy)]
struct At<'l> {
    lines: &'l Lines,
    /// Where that text starts in the file.
    base: usize,
}

impl At<'_> {
    fn line(&self, offset: usize) -> usize {
        self.lines.line(self.base + offset)
    }
}

/// One file's parse in progress: where diagnostics point, and what they
/// and the entries add up to.
struct FileParser<'a> {
    file: &'a str,
    /// `file`, shared by the origins of its entries.
    origin_file: crate::entry::SharedName,
    at: At<'a>,
    ctx: &'a Context,
    out: Loaded,
}

impl<'a> FileParser<'a> {
    /// A parse of `file` from its first line, nothing found yet.
    fn new(file: &'a str, lines: &'a Lines, ctx: &'a Context) -> Self {
        FileParser {
            file,
            origin_file: file.into(),
            at: At { lines, base: 0 },
            ctx,
            out: Loaded::default(),
        }
    }

    fn diag(&self, line: usize, entry: Option<&str>, message: String, warning: bool) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line,
            entry: entry.map(str::to_string),
            message,
            warning,
        }
    }

    fn error(&mut self, line: usize, entry: Option<&str>, message: String) {
        let d = self.diag(line, entry, message, false);
        self.out.diagnostics.push(d);
    }

    /// The file defines no entry: worth a warning, unless it has errors.
    fn no_entries(&mut self) {
        if !self.out.has_errors() {
            let message =
                "no entries: add one as [entries.NAME] with task and cron, crontab or every";
            let d = self.diag(1, None, message.into(), true);
            self.out.diagnostics.push(d);
        }
    }

    /// The file's `[defaults]` and its `[entries]` table; anything else at
    /// the top level is an error.
    fn top_level<'s>(&mut self, root: DeTable<'s>) -> (RawEntry, Option<DeTable<'s>>) {
        let mut defaults = RawEntry::default();
        let mut entries = None;
        // Owned iteration: cloning each entry's TOML tree doubled the peak
        // memory of loading a large schedule.
        for (key, value) in root {
            let line = self.at.line(key.span().start);
            match key.get_ref().as_ref() {
                "defaults" => {
                    for (k, l) in unknown_keys(&value, DEFAULT_KEYS, self.at).unwrap_or_default() {
                        let allowed = DEFAULT_KEYS.join(", ");
                        self.error(l, None, format!("unknown key `{k}` in [defaults]; allowed: {allowed}"));
                    }
                    match deserialize_entry(value, self.at) {
                        Ok(d) => defaults = d,
                        Err((l, m)) => self.error(l, None, format!("[defaults]: {m}")),
                    }
                }
                "entries" => match value.into_inner() {
                    DeValue::Table(t) => entries = Some(t),
                    _ => self.error(line, None, "`entries` must be a table of entries: [entries.NAME]".into()),
                },
                other => self.error(line, None, format!(
                    "unknown top-level key `{other}`; a schedule file has [defaults] and [entries.NAME] tables"
                )),
            }
        }
        (defaults, entries)
    }

    /// One `[entries.NAME]` table: its keys, its fields, then validation.
    fn entry(
        &mut self,
        key: Spanned<Cow<'_, str>>,
        value: Spanned<DeValue<'_>>,
        defaults: &RawEntry,
    ) {
        let name = key.get_ref().to_string();
        let entry_line = self.at.line(key.span().start);
        let origin = Origin {
            file: self.origin_file.clone(),
            line: entry_line,
        };
        self.out.names.push((name.clone(), origin.clone()));
        if !matches!(value.get_ref(), DeValue::Table(_)) {
            let message = "must be a table with task and cron, crontab or every".into();
            self.error(entry_line, Some(&name), message);
            return;
        }
        let mut bad_keys = false;
        for (k, l) in unknown_keys(&value, ENTRY_KEYS, self.at).unwrap_or_default() {
            bad_keys = true;
            let hint = suggest(&k, ENTRY_KEYS)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            self.error(l, Some(&name), format!("unknown key `{k}`{hint}"));
        }
        let key_lines = key_lines(&value, self.at);
        let raw = match deserialize_entry(value, self.at) {
            Ok(r) => r.with_defaults(defaults),
            Err((l, m)) => return self.error(l, Some(&name), m),
        };
        let (entry, problems) = entry::validate(&name, raw, origin, self.ctx);
        for p in problems {
            let line = p.key.and_then(|k| key_lines.get(k)).unwrap_or(entry_line);
            let d = self.diag(line, Some(&name), p.message, p.warning);
            self.out.diagnostics.push(d);
        }
        if let Some(e) = entry.filter(|_| !bad_keys) {
            self.out.entries.push(e);
        }
    }
}

/// Keys of a table value that are not in `allowed`, with their lines.
fn unknown_keys(
    value: &Spanned<DeValue<'_>>,
    allowed: &[&str],
    at: At<'_>,
) -> Option<Vec<(String, usize)>> {
    let DeValue::Table(t) = value.get_ref() else {
        return None;
    };
    Some(
        t.iter()
            .filter(|(k, _)| !allowed.contains(&k.get_ref().as_ref()))
            .map(|(k, _)| (k.get_ref().to_string(), at.line(k.span().start)))
            .collect(),
    )
}

/// The line of each known key an entry table sets, by its place in
/// [`ENTRY_KEYS`]: a hash map per entry was a twentieth of loading
/// 100 000 entries.
struct KeyLines([Option<usize>; ENTRY_KEYS.len()]);

impl KeyLines {
    fn get(&self, key: &str) -> Option<usize> {
        let i = ENTRY_KEYS.iter().position(|n| *n == key)?;
        self.0[i]
    }
}

fn key_lines(value: &Spanned<DeValue<'_>>, at: At<'_>) -> KeyLines {
    let mut found = KeyLines([None; ENTRY_KEYS.len()]);
    if let DeValue::Table(t) = value.get_ref() {
        for (k, _) in t.iter() {
            if let Some(i) = ENTRY_KEYS.iter().position(|n| *n == k.get_ref().as_ref()) {
                found.0[i] = Some(at.line(k.span().start));
            }
        }
    }
    found
}

fn deserialize_entry(value: Spanned<DeValue<'_>>, at: At<'_>) -> Result<RawEntry, (usize, String)> {
    let start = value.span().start;
    RawEntry::deserialize(ValueDeserializer::from(value))
        .map(|mut r| {
            for v in [&mut r.args, &mut r.kwargs, &mut r.headers]
                .into_iter()
                .flatten()
            {
                untoml_datetimes(v);
            }
            r
        })
        .map_err(|e| {
            let line = at.line(e.span().map_or(start, |s| s.start));
            (line, e.message().trim().replace('\n', " "))
        })
}

/// TOML datetimes inside args/kwargs arrive as serde's private wrapper;
/// a task receives them as RFC 3339 strings.
fn untoml_datetimes(v: &mut Value) {
    const KEY: &str = "$__toml_private_datetime";
    match v {
        Value::Object(m) => {
            if m.len() == 1
                && let Some(Value::String(s)) = m.get(KEY)
            {
                *v = Value::String(s.clone());
                return;
            }
            m.values_mut().for_each(untoml_datetimes);
        }
        Value::Array(a) => a.iter_mut().for_each(untoml_datetimes),
        _ => {}
    }
}

/// The allowed key closest to a misspelt one, if any is close.
fn suggest(key: &str, allowed: &[&str]) -> Option<&'static str> {
    let _ = allowed;
    ENTRY_KEYS
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The schedule files under `paths`: files as given, directories expanded
/// to their `*.toml` files in name order. A path that does not exist is an
/// error when the user named it, and nothing otherwise; a directory without
/// schedule files holds none (entries may all live in the database).
pub fn expand_paths(paths: &SchedulePaths) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for p in &paths.paths {
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !paths.named => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::Missing(p.display().to_string()));
            }
            Err(e) => {
                return Err(LoadError::Io {
                    path: p.display().to_string(),
                    source: e,
                });
            }
        };
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| LoadError::Io {
                    path: p.display().to_string(),
                    source: e,
                })?
                .filter_map(|d| d.ok().map(|d| d.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Reads and validates every schedule file under `paths`; names must be
/// unique across all of them. No files at all is a valid schedule, with a
/// notice saying so.
pub fn load_paths(paths: &SchedulePaths, ctx: &Context) -> Result<Loaded, LoadError> {
    let files = expand_paths(paths)?;
    let mut all = Loaded::default();
    // A file's text is dropped once it is parsed.
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| LoadError::Io {
            path: file.display().to_string(),
            source: e,
        })?;
        all.add(parse_str(&display_path(file), &text, ctx));
    }
    let mut loaded = all.without_duplicates();
    if files.is_empty() {
        loaded.notice = Some(format!(
            "no schedule files (*.toml) in {}; only entries from the database fire",
            paths.display()
        ));
    }
    Ok(loaded)
}

/// Validates several named sources together (pure: no I/O).
pub fn parse_sources(sources: &[(String, String)], ctx: &Context) -> Loaded {
    let mut all = Loaded::default();
    for (name, text) in sources {
        all.add(parse_str(name, text, ctx));
    }
    all.without_duplicates()
}

impl Loaded {
    /// Adds one file's entries and findings.
    fn add(&mut self, one: Loaded) {
        // The first file's vectors are taken as they are: copying 100 000
        // entries into a new vector held both at once.
        if self.entries.is_empty() {
            self.entries = one.entries;
        } else {
            self.entries.extend(one.entries);
        }
        if self.names.is_empty() {
            self.names = one.names;
        } else {
            self.names.extend(one.names);
        }
        self.diagnostics.extend(one.diagnostics);
    }

    /// The entries of names defined once; a name defined twice is an
    /// error at each later definition.
    fn without_duplicates(self) -> Loaded {
        let mut all = self;
        let mut seen: HashMap<&str, &Origin> = HashMap::new();
        let mut duplicates = Vec::new();
        for (name, origin) in &all.names {
            match seen.get(name.as_str()) {
                Some(first) => duplicates.push(Diagnostic {
                    file: origin.file.to_string(),
                    line: origin.line,
                    entry: Some(name.clone()),
                    message: format!(
                        "duplicate entry name; first defined at {}:{}",
                        first.file, first.line
                    ),
                    warning: false,
                }),
                None => {
                    seen.insert(name, origin);
                }
            }
        }
        // A duplicate is not loaded, not even its first definition: which one
        // wins would be an accident of file order.
        let dup_names: std::collections::HashSet<String> =
            duplicates.iter().filter_map(|d| d.entry.clone()).collect();
        let unique: Vec<Entry> = std::mem::take(&mut all.entries)
            .into_iter()
            .filter(|e| !dup_names.contains(&e.name))
            .collect();
        all.diagnostics.extend(duplicates);
        all.entries = unique;
        all
    }
}

fn display_path(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Loaded {
        parse_str("s.toml", src, &Context::default())
    }

    #[test]
    fn spec_example_parses() {
        let l = parse(
            r#"
[defaults]
timezone = "America/Sao_Paulo"
queue = "celery"

[entries.capture-payments]
task = "payment.tasks.capture_payment"
cron = "*/5 * * * *"
kwargs = { batch = 100 }
expires = "4m"

[entries.nightly-report]
task = "reports.tasks.nightly"
crontab = { minute = "0", hour = "3", day_of_week = "mon-fri" }

[entries.heartbeat]
task = "app.tasks.heartbeat"
every = "30s"
"#,
        );
        assert!(!l.has_errors(), "{:?}", l.diagnostics);
        assert_eq!(l.entries.len(), 3);
        assert_eq!(
            l.entries[1].schedule.display_tz().name(),
            "America/Sao_Paulo"
        );
        assert_eq!(l.entries[0].kwargs()["batch"], 100);
    }

    #[test]
    fn errors_carry_lines_and_all_are_reported() {
        let src = "[entries.a]\ntask = \"x.y\"\ncron = \"* * *\"\n\n[entries.b]\ntask = \"x.y\"\nevery = \"5m\"\ncorn = \"1\"\n";
        let l = parse(src);
        let msgs: Vec<String> = l.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("s.toml:3: entry 'a': ") && m.contains("3 fields")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m
                    .starts_with("s.toml:8: entry 'b': unknown key `corn`; did you mean `cron`?")),
            "{msgs:?}"
        );
        assert!(l.entries.is_empty());
    }

    #[test]
    fn wrong_types_name_the_line() {
        let l = parse("[entries.a]\ntask = \"x.y\"\nevery = \"1m\"\nenabled = \"yes\"\n");
        let d = &l.diagnostics[0];
        assert_eq!((d.line, d.entry.as_deref()), (4, Some("a")), "{d}");
    }

    #[test]
    fn toml_syntax_error_has_a_line() {
        let l = parse("[entries.a]\ntask = \"x.y\n");
        assert_eq!(l.diagnostics.len(), 1);
        assert!(
            l.diagnostics[0].message.starts_with("invalid TOML"),
            "{}",
            l.diagnostics[0]
        );
        assert_eq!(l.diagnostics[0].line, 2);
    }

    #[test]
    fn duplicate_names_across_files() {
        let a = (
            "a.toml".to_string(),
            "[entries.x]\ntask = \"t.t\"\nevery = \"1m\"\n".to_string(),
        );
        let b = (
            "b.toml".to_string(),
            "\n[entries.x]\ntask = \"t.t\"\nevery = \"2m\"\n".to_string(),
        );
        let l = parse_sources(&[a, b], &Context::default());
        let d: Vec<String> = l.errors().map(|d| d.to_string()).collect();
        assert_eq!(
            d,
            ["b.toml:2: entry 'x': duplicate entry name; first defined at a.toml:1"]
        );
    }

    #[test]
    fn oversized_payload_is_refused() {
        let big = "x".repeat(700 * 1024);
        let l = parse(&format!(
            "[entries.a]\ntask = \"x.y\"\nevery = \"1m\"\nargs = [\"{big}\"]\n"
        ));
        assert!(
            l.errors().any(|d| d.message.contains("byte limit")),
            "{:?}",
            l.diagnostics
        );
    }

    #[test]
    fn toml_datetimes_in_kwargs_become_strings() {
        let l = parse(
            "[entries.a]\ntask = \"x.y\"\nevery = \"1m\"\nkwargs = { since = 2026-01-01T00:00:00Z }\n",
        );
        assert!(!l.has_errors(), "{:?}", l.diagnostics);
        assert_eq!(l.entries[0].kwargs()["since"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn an_entry_name_that_sqs_refuses_as_fifo_group_id_is_an_error() {
        let src =
            "[entries.\"daily report\"]\ntask = \"x.y\"\nevery = \"1h\"\nqueue = \"q.fifo\"\n";
        let l = parse(src);
        let errors: Vec<String> = l.errors().map(|d| d.to_string()).collect();
        assert_eq!(
            errors,
            [
                "s.toml:1: entry 'daily report': on FIFO queue \"q.fifo\" the entry name is the MessageGroupId, and it contains ' '; SQS allows only ASCII letters, digits and punctuation (no spaces); set `group_id` (e.g. group_id = \"daily-report\")"
            ]
        );
        assert!(l.entries.is_empty());
        // A group id of its own, or a standard queue, and the name may be anything.
        let fixed = parse(&format!("{src}group_id = \"daily-report\"\n"));
        assert!(!fixed.has_errors(), "{:?}", fixed.diagnostics);
        let standard = parse(&src.replace("q.fifo", "q"));
        assert!(!standard.has_errors(), "{:?}", standard.diagnostics);
    }

    #[test]
    fn an_explicit_group_id_that_sqs_refuses_is_an_error_on_its_line() {
        let l = parse(
            "[entries.a]\ntask = \"x.y\"\nevery = \"1h\"\nqueue = \"q.fifo\"\ngroup_id = \"tenant 1\"\n",
        );
        let errors: Vec<String> = l.errors().map(|d| d.to_string()).collect();
        assert_eq!(
            errors,
            [
                "s.toml:5: entry 'a': group_id \"tenant 1\" contains ' '; SQS allows only ASCII letters, digits and punctuation (no spaces)"
            ]
        );
        let long = parse(&format!(
            "[entries.a]\ntask = \"x.y\"\nevery = \"1h\"\nqueue = \"q.fifo\"\ngroup_id = \"{}\"\n",
            "g".repeat(129)
        ));
        assert!(
            long.errors().any(|d| d
                .message
                .ends_with("is 129 characters long, over SQS's 128")),
            "{:?}",
            long.diagnostics
        );
    }

    /// The review's counterexample: `check` accepted it, and a day of it
    /// lost about a quarter of its slots.
    #[test]
    fn a_cron_entry_jittered_past_its_gap_fails_check() {
        let l = parse("[entries.a]\ntask = \"x.y\"\ncron = \"* * * * *\"\njitter = \"5m\"\n");
        let errors: Vec<String> = l.errors().map(|d| d.to_string()).collect();
        assert_eq!(
            errors,
            [
                "s.toml:4: entry 'a': jitter (5m) must be shorter than the shortest gap between fires of * * * * * (1m), or fires would overtake each other"
            ]
        );
    }

    /// `run` refused to start without a schedule file, so a deployment
    /// whose entries all live in the database needed a dummy one.
    #[test]
    fn no_schedule_files_is_an_empty_schedule_with_a_notice() {
        let ctx = Context::default();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("schedules");
        let default = SchedulePaths {
            paths: vec![missing.clone()],
            named: false,
        };
        let l = load_paths(&default, &ctx).unwrap();
        assert!(l.entries.is_empty() && l.diagnostics.is_empty());
        let notice = l.notice.unwrap();
        assert!(
            notice.starts_with("no schedule files (*.toml) in "),
            "{notice}"
        );

        // An empty directory, named or not, holds no files: the same.
        std::fs::create_dir(&missing).unwrap();
        let named = SchedulePaths::named(vec![missing.clone()]);
        let l = load_paths(&named, &ctx).unwrap();
        assert!(l.entries.is_empty() && l.notice.is_some());

        // A path the user named that does not exist stays an error.
        let typo = SchedulePaths::named(vec![dir.path().join("schedulse")]);
        assert!(matches!(
            load_paths(&typo, &ctx),
            Err(LoadError::Missing(_))
        ));

        // With a file, no notice.
        std::fs::write(
            missing.join("a.toml"),
            "[entries.a]\ntask = \"x.y\"\nevery = \"1m\"\n",
        )
        .unwrap();
        let l = load_paths(&default, &ctx).unwrap();
        assert_eq!((l.entries.len(), l.notice), (1, None));
    }

    /// Everything a parse produced, to compare two parses.
    fn outcome(l: &Loaded) -> String {
        format!("{:?}\n{:?}\n{:?}", l.entries, l.diagnostics, l.names)
    }

    /// Pieces of schedule files, good and bad, which
    /// `parse_by_section_equals_parse_whole` puts together.
    const PIECES: &[&str] = &[
        "[entries.a]\ntask = \"x.y\"\nevery = \"1m\"\nkwargs = { n = 1 }\n",
        "[defaults]\nqueue = \"q\"\nexpires = \"30s\"\n",
        "# a comment\n\n",
        "[entries.\"b.c\"]\ntask = \"x.y\"\ncron = \"*/5 * * * *\"\n[entries.\"b.c\".kwargs]\nk = [\n[1, 2],\n[3],\n]\n",
        "[entries.'d']\ntask = \"x.y\"\nevery = \"1h\"\nheaders = { h = \"\"\"\n[entries.z]\ntask = 1\n\"\"\" }\n",
        "[entries.e]\ntask = \"x.y\"\ncron = \"* * *\"\ncorn = 1\n",
        "[entries.f]\ntask = \"x.y\nevery = \"1m\"\n",
        "[entries]\ng = { task = \"x.y\", every = \"1m\" }\n",
        "top = 1\n",
        "[[entries.h]]\ntask = \"x.y\"\n",
        "[entries.a.kwargs]\nm = 2\n",
        "[defaults.headers]\nx = \"y\"\n",
        "[entries.i]\r\ntask = \"x.y\"\r\nevery = \"2m\"\r\nargs = [1,\r\n  2]\r\n",
        "[ entries . j ]  # spaced\ntask = \"x.y\"\nevery = \"1m\"\nkwargs = {\n  a = 1,\n}\n",
        "[defaults]\nqueue = 5\nbogus = 1\n",
        "[entries.k]\ntask = \"x.y\"\nevery = \"1m\"\nenabled = \"yes\"\n",
        "[entries.l]\n",
        "[other]\nx = 1\n",
        "[entries.m]\ntask = \"x.y\"\nevery = \"1m\"\n[entries]\n",
        "[entries.n]\ntask = \"x.y\"\nevery = \"1m\"\ntask = \"z.z\"\n",
        "]\n",
        "[entries.\"bad\\q\"]\ntask = \"x.y\"\n",
        "# control \u{1} character\n",
        "# lone carriage return\r",
    ];

    /// Parsing a section at a time is only a way to use less memory: it
    /// must give what parsing the whole file gives, entries, diagnostics
    /// and lines, for any file.
    #[test]
    fn parse_by_section_equals_parse_whole() {
        let ctx = Context::default();
        let mut files: Vec<String> = Vec::new();
        for a in PIECES {
            files.push((*a).to_string());
            files.push(format!("\u{feff}{a}"));
            for b in PIECES {
                files.push(format!("{a}{b}"));
                for c in [PIECES[0], PIECES[1], PIECES[3]] {
                    files.push(format!("{a}{b}{c}"));
                    files.push(format!("{c}{a}{b}"));
                }
            }
        }
        let mut by_section = 0;
        for src in &files {
            let whole = parse_whole("s.toml", src, &Lines::new(src), &ctx);
            let parsed = parse_str("s.toml", src, &ctx);
            assert_eq!(outcome(&parsed), outcome(&whole), "{src}");
            if let Some(s) = sections(src) {
                by_section += 1;
                assert!(
                    parse_sections("s.toml", src, &Lines::new(src), &ctx, &s).is_some()
                        || whole.has_errors(),
                    "{src}"
                );
            }
        }
        // The pieces reach both paths.
        assert!(
            by_section > files.len() / 4,
            "{by_section} of {}",
            files.len()
        );
        assert!(by_section < files.len(), "{by_section} of {}", files.len());
    }

    /// The usual file is read a section at a time; the shapes the scan
    /// cannot split go to the whole parse.
    #[test]
    fn which_files_are_read_a_section_at_a_time() {
        let spec = "# schedule\n[defaults]\nqueue = \"q\"\n[defaults.headers]\nh = 1\n\n[entries.a]\ntask = \"x.y\"\nevery = \"1m\"\n[entries.a.kwargs]\nk = [\n[1],\n]\n[entries.\"b.c\"]\ntask = \"x.y\"\ncron = \"* * * * *\"\n";
        let s = sections(spec).unwrap();
        assert_eq!(s.defaults, Some(11..spec.find("[entries.a]").unwrap()));
        assert_eq!(s.entries.len(), 2);
        assert_eq!(&spec[s.entries[1].clone()][..15], "[entries.\"b.c\"]");
        for whole in [
            "x = 1\n[entries.a]\n",
            "[entries]\na = {}\n",
            "[[entries.a]]\n",
            "[other]\n",
            "[entries.a]\n[entries.b]\n[entries.a.kwargs]\n",
            "[defaults]\n[entries.a]\n[defaults.headers]\n",
        ] {
            assert_eq!(sections(whole), None, "{whole}");
        }
        // The same table twice, spelt two ways: one section, which then
        // does not parse (TOML forbids it), so the whole parse says why.
        let twice = "[entries.a]\n[entries.\"a\"]\n";
        assert_eq!(sections(twice).unwrap().entries, vec![(0..twice.len())]);
        let l = parse(twice);
        assert!(
            l.diagnostics[0].message.starts_with("invalid TOML"),
            "{l:?}"
        );
    }
}
