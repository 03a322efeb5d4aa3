//! The mapping-file schema and its compiler: TOML in, [`CompiledMapping`] out, every problem
//! reported with file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use xxhash_rust::xxh3::xxh3_64;

use super::catalogue::SourceSchema;
use super::convert::{Converter, EnumMap};
use super::error::{Diagnostic, MappingError, RecordError};
use crate::model::{Field, FieldKind, Value};

/// Where a rule puts its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Field(Field),
    /// `mobile_or_phone`: a UK mobile goes to `mobile`, any other number to `phone`, whatever
    /// the source calls the field. Only with the `phone` converter.
    MobileOrPhone,
}

pub const MOBILE_OR_PHONE: &str = "mobile_or_phone";

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Field(f) => f.name(),
            Target::MobileOrPhone => MOBILE_OR_PHONE,
        }
    }
}

/// A source field path; dotted for nested objects (`street_address.postcode`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePath(String);

impl SourcePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// The top-level member the path starts in.
    pub fn root(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }
}

/// One `[[field]]` of a mapping file, compiled.
#[derive(Debug, Clone)]
pub(super) struct ReadRule {
    /// Alternatives in order: the first that holds a value is used.
    pub paths: Vec<SourcePath>,
    /// Each path's top-level member, as its number in [`CompiledMapping::roots`].
    pub roots: Vec<usize>,
    pub target: Target,
    pub converter: Converter,
    pub required: bool,
}

/// Where a canonical field is written back, and how it is encoded.
#[derive(Debug, Clone)]
pub(super) struct WriteBinding {
    pub field: Field,
    pub path: SourcePath,
    pub converter: Converter,
}

/// An `[[example]]`: an input record and what mapping it must give.
#[derive(Debug, Clone)]
pub struct Example {
    pub name: String,
    pub line: usize,
    pub input: serde_json::Value,
    pub expected: Option<crate::model::CanonicalValues>,
    /// `source_path: code`, sorted.
    pub problems: Vec<String>,
    /// A [`RecordError::code`].
    pub error: Option<String>,
    /// The body `reverse(expected)` must give.
    pub written: Option<serde_json::Value>,
}

/// A mapping file checked and ready: [`CompiledMapping::apply`] and
/// [`CompiledMapping::reverse`] are pure.
#[derive(Debug, Clone)]
pub struct CompiledMapping {
    pub(super) source: SourceSchema,
    pub(super) file: PathBuf,
    pub(super) rules: Vec<ReadRule>,
    pub(super) writes: Vec<WriteBinding>,
    pub(super) keep_raw: Vec<String>,
    pub(super) examples: Vec<Example>,
    /// The top-level members the read rules look into (first segment of every path).
    pub(super) roots: Roots,
}

/// The top-level members the read rules look into, each once, numbered; a name's number is
/// found by its hash (one hash and one comparison, not a search comparing strings).
#[derive(Debug, Clone, Default)]
pub(super) struct Roots {
    names: Vec<String>,
    /// (hash of the name, its number), sorted by hash.
    by_hash: Vec<(u64, usize)>,
}

impl Roots {
    fn of(mut names: Vec<String>) -> Roots {
        names.sort();
        names.dedup();
        let mut by_hash: Vec<(u64, usize)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (xxh3_64(n.as_bytes()), i))
            .collect();
        by_hash.sort_unstable();
        Roots { names, by_hash }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The number of the member `name`, if the rules read it.
    pub fn find(&self, name: &str) -> Option<usize> {
        let hash = xxh3_64(name.as_bytes());
        let first = self.by_hash.partition_point(|(h, _)| *h < hash);
        self.by_hash[first..]
            .iter()
            .take_while(|(h, _)| *h == hash)
            .map(|(_, i)| *i)
            .find(|i| self.names[*i] == name)
    }
}

impl CompiledMapping {
    pub fn source(&self) -> SourceSchema {
        self.source
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Source fields deliberately not mapped: they live only in the raw payload.
    pub fn kept_raw(&self) -> &[String] {
        &self.keep_raw
    }

    /// Source fields read by some rule.
    pub fn mapped_source_fields(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.paths.iter().map(SourcePath::as_str))
    }

    /// Canonical fields this mapping can write back, with the source field each goes to.
    pub fn writable_fields(&self) -> impl Iterator<Item = (Field, &str)> {
        self.writes.iter().map(|w| (w.field, w.path.as_str()))
    }

    pub fn examples(&self) -> &[Example] {
        &self.examples
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    source: Spanned<String>,
    #[serde(default)]
    keep_raw: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default, rename = "field")]
    fields: Vec<RawRule>,
    #[serde(default, rename = "example")]
    examples: Vec<RawExample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    from: Spanned<toml::Value>,
    to: Spanned<String>,
    convert: Spanned<toml::Value>,
    #[serde(default)]
    write: Option<Spanned<toml::Value>>,
    #[serde(default)]
    read: Option<Spanned<bool>>,
    #[serde(default)]
    required: Option<Spanned<bool>>,
    /// Free documentation for readers of the file.
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExample {
    name: Spanned<String>,
    input: Spanned<String>,
    #[serde(default)]
    expected: Option<Spanned<String>>,
    #[serde(default)]
    problems: Vec<Spanned<String>>,
    #[serde(default)]
    error: Option<Spanned<String>>,
    #[serde(default)]
    written: Option<Spanned<String>>,
}

/// Reads and checks one mapping file.
pub fn compile(path: &Path) -> Result<CompiledMapping, MappingError> {
    let text = std::fs::read_to_string(path).map_err(|e| MappingError {
        diagnostics: vec![Diagnostic {
            file: path.to_owned(),
            line: None,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    compile_str(path, &text)
}

/// Checks mapping-file text; `file` is only used to name the file in diagnostics.
pub fn compile_str(file: &Path, text: &str) -> Result<CompiledMapping, MappingError> {
    let mut ctx = Ctx {
        file,
        text,
        diagnostics: Vec::new(),
    };
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            ctx.error(&span, e.message().trim_end().to_owned());
            return Err(ctx.into_error());
        }
    };
    let compiled = ctx.compile(raw);
    if ctx.diagnostics.is_empty() {
        compiled.ok_or_else(|| ctx.into_error())
    } else {
        Err(ctx.into_error())
    }
}

/// Compiles every `*.toml` in `dir`, requiring exactly one file per source; all problems of all
/// files are reported together.
pub fn compile_dir(dir: &Path) -> Result<Vec<CompiledMapping>, MappingError> {
    let whole_dir = |message: String| Diagnostic {
        file: dir.to_owned(),
        line: None,
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| MappingError {
        diagnostics: vec![whole_dir(format!("cannot read the directory: {e}"))],
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut diagnostics = Vec::new();
    let mut mappings: Vec<CompiledMapping> = Vec::new();
    for path in paths {
        match compile(&path) {
            Ok(m) => {
                if let Some(other) = mappings.iter().find(|o| o.source == m.source) {
                    diagnostics.push(Diagnostic {
                        file: path.clone(),
                        line: None,
                        message: format!(
                            "source `{}` is already mapped by {}",
                            m.source.name(),
                            other.file.display()
                        ),
                    });
                }
                mappings.push(m);
            }
            Err(e) => diagnostics.extend(e.diagnostics),
        }
    }
    for source in SourceSchema::ALL {
        if diagnostics.is_empty() && !mappings.iter().any(|m| m.source == source) {
            diagnostics.push(whole_dir(format!(
                "no mapping file for source `{}`",
                source.name()
            )));
        }
    }
    if diagnostics.is_empty() {
        Ok(mappings)
    } else {
        Err(MappingError { diagnostics })
    }
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn error(&mut self, span: &Range<usize>, message: String) {
        let line = self.line_of(span.start);
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line: Some(line),
            message,
        });
    }

    fn into_error(self) -> MappingError {
        MappingError {
            diagnostics: self.diagnostics,
        }
    }

    fn compile(&mut self, raw: RawFile) -> Option<CompiledMapping> {
        let Some(source) = SourceSchema::from_name(raw.source.get_ref()) else {
            let known: Vec<_> = SourceSchema::ALL.iter().map(|s| s.name()).collect();
            self.error(
                &raw.source.span(),
                format!(
                    "unknown source `{}` (known: {})",
                    raw.source.get_ref(),
                    known.join(", ")
                ),
            );
            return None;
        };
        let mut rules = Vec::new();
        let mut writes: Vec<WriteBinding> = Vec::new();
        // Which line first claimed a canonical field, a read path, a written field or path.
        let mut read_targets: BTreeMap<Field, usize> = BTreeMap::new();
        let mut read_paths: BTreeMap<String, usize> = BTreeMap::new();
        let mut written_fields: BTreeSet<Field> = BTreeSet::new();
        let mut written_paths: BTreeSet<String> = BTreeSet::new();

        // Paths of every reading rule, even one with errors, so that a broken rule does not
        // also report its fields as unaccounted for.
        let claimed: BTreeSet<String> = raw
            .fields
            .iter()
            .filter(|r| r.read.as_ref().is_none_or(|r| *r.get_ref()))
            .flat_map(|r| match r.from.get_ref() {
                toml::Value::String(s) => vec![s.clone()],
                toml::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        for raw_rule in raw.fields {
            let Some((rule, rule_writes, reads)) = self.compile_rule(source, &raw_rule) else {
                continue;
            };
            let line = self.line_of(raw_rule.to.span().start);
            if reads {
                if let Target::Field(f) = rule.target
                    && let Some(first) = read_targets.insert(f, line)
                {
                    self.error(
                            &raw_rule.to.span(),
                            format!(
                                "`{}` is already the target of the rule on line {first}; use `from = [..]` alternatives instead",
                                f.name()
                            ),
                        );
                }
                for p in &rule.paths {
                    if let Some(first) = read_paths.insert(p.as_str().to_owned(), line) {
                        self.error(
                            &raw_rule.from.span(),
                            format!(
                                "source field `{}` is already mapped on line {first}",
                                p.as_str()
                            ),
                        );
                    }
                }
            }
            for w in rule_writes {
                let span = raw_rule
                    .write
                    .as_ref()
                    .map_or(raw_rule.to.span(), Spanned::span);
                if !written_fields.insert(w.field) {
                    self.error(
                        &span,
                        format!("`{}` is written back by two rules", w.field.name()),
                    );
                }
                if !written_paths.insert(w.path.as_str().to_owned()) {
                    self.error(
                        &span,
                        format!("source field `{}` is written by two rules", w.path.as_str()),
                    );
                }
                writes.push(w);
            }
            if reads {
                rules.push(rule);
            }
        }

        let keep_raw_span = raw
            .keep_raw
            .as_ref()
            .map_or(raw.source.span(), Spanned::span);
        let keep_raw_entries = raw
            .keep_raw
            .as_ref()
            .map_or(&[][..], |k| k.get_ref().as_slice());
        let keep_raw = self.check_keep_raw(
            source,
            keep_raw_entries,
            &keep_raw_span,
            &read_paths,
            &claimed,
        );
        let roots = Roots::of(
            rules
                .iter()
                .flat_map(|r: &ReadRule| r.paths.iter())
                .map(|p| p.root().to_owned())
                .collect(),
        );
        let rules: Vec<ReadRule> = rules
            .into_iter()
            .map(|rule| ReadRule {
                roots: rule
                    .paths
                    .iter()
                    .map(|p| roots.find(p.root()))
                    .collect::<Option<_>>()
                    .expect("every path's root is among the roots"),
                ..rule
            })
            .collect();
        let mapping = CompiledMapping {
            source,
            file: self.file.to_owned(),
            rules,
            writes,
            keep_raw,
            examples: Vec::new(),
            roots,
        };
        let examples = raw
            .examples
            .iter()
            .filter_map(|e| self.compile_example(e))
            .collect();
        Some(CompiledMapping {
            examples,
            ..mapping
        })
    }

    /// Returns the rule, its write bindings, and whether it reads.
    fn compile_rule(
        &mut self,
        source: SourceSchema,
        raw: &RawRule,
    ) -> Option<(ReadRule, Vec<WriteBinding>, bool)> {
        let errors_before = self.diagnostics.len();
        let reads = raw.read.as_ref().is_none_or(|r| *r.get_ref());
        let required = raw.required.as_ref().is_some_and(|r| *r.get_ref());

        let target = match raw.to.get_ref().as_str() {
            MOBILE_OR_PHONE => Some(Target::MobileOrPhone),
            name => match Field::from_name(name) {
                Some(f) => Some(Target::Field(f)),
                None => {
                    let hint = Field::ALL
                        .iter()
                        .find(|f| f.column() == name)
                        .map(|f| format!("; did you mean `{}`?", f.name()))
                        .unwrap_or_default();
                    self.error(
                        &raw.to.span(),
                        format!("unknown canonical field `{name}`{hint}"),
                    );
                    None
                }
            },
        };

        let paths = self.compile_paths(&raw.from);
        let write_fields = self.compile_write(raw, target);
        let converter = self.compile_converter(&raw.convert, !write_fields.is_empty());

        if let (Some(target), Some(converter)) = (target, &converter) {
            let fits = match target {
                Target::Field(f) => converter.fits(f.kind()),
                Target::MobileOrPhone => *converter == Converter::Phone,
            };
            if !fits {
                let what = match target {
                    Target::Field(f) => kind_description(f.kind()),
                    Target::MobileOrPhone => "a phone number routed by kind".to_owned(),
                };
                let hint = if *converter == Converter::Phone {
                    " (the `phone` converter goes with `to = \"mobile_or_phone\"`)"
                } else {
                    ""
                };
                self.error(
                    &raw.convert.span(),
                    format!(
                        "converter `{}` cannot produce `{}`, which holds {what}{hint}",
                        converter.name(),
                        target.name()
                    ),
                );
            }
        }

        for path in &paths {
            if reads && !source.is_readable(path.as_str()) {
                self.error(
                    &raw.from.span(),
                    format!(
                        "unknown source field `{}`: the {} API does not document it",
                        path.as_str(),
                        source.name()
                    ),
                );
            }
        }
        if !reads && write_fields.is_empty() {
            self.error(
                &raw.from.span(),
                "a rule with `read = false` must write (`write = ...`)".to_owned(),
            );
        }
        if required && !reads {
            self.error(
                &raw.from.span(),
                "`required` needs a rule that reads".to_owned(),
            );
        }
        let write_path = paths.first().cloned();
        if !write_fields.is_empty() {
            let span = raw.write.as_ref().map_or(raw.to.span(), Spanned::span);
            if source.writable().is_empty() {
                self.error(
                    &span,
                    format!(
                        "the {} API is read-only: nothing can be written",
                        source.name()
                    ),
                );
            } else if let Some(p) = &write_path
                && !source.is_writable(p.as_str())
            {
                self.error(
                        &span,
                        format!(
                            "source field `{}` cannot be written to the {} API (a write goes to the first `from` path)",
                            p.as_str(),
                            source.name()
                        ),
                    );
            }
        }

        if self.diagnostics.len() > errors_before {
            return None;
        }
        let (target, converter, write_path) = (target?, converter?, write_path?);
        let writes = write_fields
            .into_iter()
            .map(|field| WriteBinding {
                field,
                path: write_path.clone(),
                converter: converter.clone(),
            })
            .collect();
        let rule = ReadRule {
            paths,
            roots: Vec::new(),
            target,
            converter,
            required,
        };
        Some((rule, writes, reads))
    }

    fn compile_paths(&mut self, from: &Spanned<toml::Value>) -> Vec<SourcePath> {
        let names: Vec<&str> = match from.get_ref() {
            toml::Value::String(s) => vec![s.as_str()],
            toml::Value::Array(items) => items.iter().filter_map(toml::Value::as_str).collect(),
            _ => Vec::new(),
        };
        let well_formed = |s: &str| !s.is_empty() && s.split('.').all(|seg| !seg.is_empty());
        let array_len = from.get_ref().as_array().map(Vec::len);
        if names.is_empty()
            || array_len.is_some_and(|n| n != names.len())
            || !names.iter().all(|n| well_formed(n))
        {
            self.error(
                &from.span(),
                "`from` must be a source field path or a list of alternative paths".to_owned(),
            );
            return Vec::new();
        }
        names
            .into_iter()
            .map(|n| SourcePath(n.to_owned()))
            .collect()
    }

    /// The canonical fields a rule writes back.
    fn compile_write(&mut self, raw: &RawRule, target: Option<Target>) -> Vec<Field> {
        let Some(write) = &raw.write else {
            return Vec::new();
        };
        let span = write.span();
        match (write.get_ref(), target) {
            (toml::Value::Boolean(false), _) => Vec::new(),
            (toml::Value::Boolean(true), Some(Target::Field(f))) => vec![f],
            (toml::Value::Boolean(true), Some(Target::MobileOrPhone)) => {
                self.error(
                    &span,
                    "say which canonical fields go to this source field: `write = [\"mobile\"]`, `[\"phone\"]` or both"
                        .to_owned(),
                );
                Vec::new()
            }
            (toml::Value::Array(items), Some(Target::MobileOrPhone)) => {
                let mut fields = Vec::new();
                for item in items {
                    match item.as_str().and_then(Field::from_name) {
                        Some(f @ (Field::Mobile | Field::Phone)) if !fields.contains(&f) => {
                            fields.push(f)
                        }
                        _ => self.error(
                            &span,
                            "a `mobile_or_phone` rule writes `mobile`, `phone` or both, once each"
                                .to_owned(),
                        ),
                    }
                }
                fields
            }
            (_, None) => Vec::new(),
            _ => {
                self.error(
                    &span,
                    "`write` is `true` or `false` (a list only for `mobile_or_phone`)".to_owned(),
                );
                Vec::new()
            }
        }
    }

    fn compile_converter(
        &mut self,
        convert: &Spanned<toml::Value>,
        writes: bool,
    ) -> Option<Converter> {
        let span = convert.span();
        match convert.get_ref() {
            toml::Value::String(name) => {
                let converter = Converter::from_name(name);
                if converter.is_none() {
                    let known: Vec<_> = Converter::names().collect();
                    let hint = if name == "enum" {
                        "`enum` takes a table: convert = { enum = { source = \"canonical\" } }"
                            .to_owned()
                    } else {
                        format!("known: {}", known.join(", "))
                    };
                    self.error(&span, format!("unknown converter `{name}` ({hint})"));
                }
                converter
            }
            toml::Value::Table(table) => {
                let pairs = |v: Option<&toml::Value>| -> Option<Vec<(String, String)>> {
                    v?.as_table()?
                        .iter()
                        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                };
                let unknown_key = table.keys().any(|k| k != "enum" && k != "write");
                let read = pairs(table.get("enum"));
                let write = match table.get("write") {
                    None if writes => None,
                    None => Some(Vec::new()),
                    Some(v) => match pairs(Some(v)) {
                        Some(p) => Some(p),
                        None => {
                            self.error(
                                &span,
                                "`write` must map canonical tokens to source tokens (strings)"
                                    .to_owned(),
                            );
                            return None;
                        }
                    },
                };
                match read {
                    Some(read) if !unknown_key && !read.is_empty() => {
                        match EnumMap::new(read, write) {
                            Ok(map) => Some(Converter::Enum(map)),
                            Err(e) => {
                                self.error(&span, format!("enum converter: {e}"));
                                None
                            }
                        }
                    }
                    _ => {
                        self.error(
                            &span,
                            "a converter table is `{ enum = { source = \"canonical\", ... }, write = { canonical = \"source\", ... } }` (`write` optional)"
                                .to_owned(),
                        );
                        None
                    }
                }
            }
            _ => {
                self.error(
                    &span,
                    "`convert` is a converter name or an `enum` table".to_owned(),
                );
                None
            }
        }
    }

    fn check_keep_raw(
        &mut self,
        source: SourceSchema,
        keep_raw: &[Spanned<String>],
        keep_raw_span: &Range<usize>,
        read_paths: &BTreeMap<String, usize>,
        claimed: &BTreeSet<String>,
    ) -> Vec<String> {
        let mut kept = Vec::new();
        for entry in keep_raw {
            let name = entry.get_ref();
            if !source.is_readable(name) {
                self.error(
                    &entry.span(),
                    format!(
                        "unknown source field `{name}` in keep_raw: the {} API does not document it",
                        source.name()
                    ),
                );
            } else if let Some(line) = read_paths.get(name) {
                self.error(
                    &entry.span(),
                    format!("`{name}` is both mapped (line {line}) and listed in keep_raw"),
                );
            } else if kept.contains(name) {
                self.error(
                    &entry.span(),
                    format!("`{name}` is listed twice in keep_raw"),
                );
            } else {
                kept.push(name.clone());
            }
        }
        let span = keep_raw_span.clone();
        for field in source.readable() {
            let covered = read_paths.contains_key(*field)
                || claimed.contains(*field)
                || kept.iter().any(|k| k == field);
            if !covered {
                self.error(
                    &span,
                    format!(
                        "source field `{field}` is neither mapped nor listed in keep_raw: say what happens to it"
                    ),
                );
            }
        }
        kept
    }

    fn compile_example(&mut self, raw: &RawExample) -> Option<Example> {
        let errors_before = self.diagnostics.len();
        let name = raw.name.get_ref().clone();
        let line = self.line_of(raw.name.span().start);
        let input = self.parse_json(&raw.input, "input");
        let expected = raw.expected.as_ref().and_then(|e| {
            let json = self.parse_json(e, "expected")?;
            self.canonical_values(&json, &e.span())
        });
        let written = raw
            .written
            .as_ref()
            .and_then(|w| self.parse_json(w, "written"));
        let mut problems = Vec::new();
        for p in &raw.problems {
            let ok = p
                .get_ref()
                .split_once(": ")
                .is_some_and(|(path, code)| !path.is_empty() && !code.is_empty());
            if ok {
                problems.push(p.get_ref().clone());
            } else {
                self.error(
                    &p.span(),
                    "a problem is written `source_path: reason_code`".to_owned(),
                );
            }
        }
        problems.sort();
        let error = raw.error.as_ref().map(|e| e.get_ref().clone());
        if let (Some(code), Some(span)) = (&error, raw.error.as_ref().map(Spanned::span))
            && !RecordError::CODES.contains(&code.as_str())
        {
            self.error(
                &span,
                format!(
                    "unknown record error `{code}` (known: {})",
                    RecordError::CODES.join(", ")
                ),
            );
        }
        if error.is_some() == expected.is_some() {
            self.error(
                &raw.name.span(),
                "an example gives either `expected` or `error`".to_owned(),
            );
        }
        if self.diagnostics.len() > errors_before {
            return None;
        }
        Some(Example {
            name,
            line,
            input: input?,
            expected,
            problems,
            error,
            written,
        })
    }

    fn parse_json(&mut self, text: &Spanned<String>, what: &str) -> Option<serde_json::Value> {
        match serde_json::from_str(text.get_ref()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(
                    &text.span(),
                    format!(
                        "`{what}` is not valid JSON (line {} of it): {}",
                        e.line(),
                        e
                    ),
                );
                None
            }
        }
    }

    fn canonical_values(
        &mut self,
        json: &serde_json::Value,
        span: &Range<usize>,
    ) -> Option<crate::model::CanonicalValues> {
        let Some(object) = json.as_object() else {
            self.error(
                span,
                "`expected` must be a JSON object of canonical fields".to_owned(),
            );
            return None;
        };
        let mut values = crate::model::CanonicalValues::new();
        for (name, v) in object {
            let Some(field) = Field::from_name(name) else {
                self.error(
                    span,
                    format!("`expected` names unknown canonical field `{name}`"),
                );
                continue;
            };
            let value = Value::from_json(field.value_type(), v)
                .and_then(|value| field.canonicalise(&value).map(|c| (c == value, value)));
            match value {
                Ok((true, value)) => {
                    values.insert(field, value);
                }
                Ok((false, _)) => self.error(
                    span,
                    format!("`expected` value of `{name}` is not in canonical form"),
                ),
                Err(e) => self.error(span, format!("`expected` value of `{name}`: {e}")),
            }
        }
        Some(values)
    }
}

fn kind_description(kind: FieldKind) -> String {
    match kind {
        FieldKind::Token(vocabulary) => format!("one of: {}", vocabulary.join(", ")),
        other => format!("{other:?}").to_lowercase(),
    }
}
