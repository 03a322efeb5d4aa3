//! Running the `[[example]]` records of a mapping file.

use std::fmt;

use super::mapping::{CompiledMapping, Example};

/// An example whose mapping differs from what the file says. Examples are synthetic records
/// written into the mapping files, so the message may show their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleFailure {
    pub file: String,
    pub line: usize,
    pub name: String,
    pub message: String,
}

impl fmt::Display for ExampleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: example `{}`: {}",
            self.file, self.line, self.name, self.message
        )
    }
}

impl CompiledMapping {
    /// Runs every example; an empty result means all passed.
    pub fn check_examples(&self) -> Vec<ExampleFailure> {
        self.examples
            .iter()
            .filter_map(|e| self.check_example(e).err())
            .map(|(e, message)| ExampleFailure {
                file: self.file.display().to_string(),
                line: e.line,
                name: e.name.clone(),
                message,
            })
            .collect()
    }

    fn check_example<'e>(&self, example: &'e Example) -> Result<(), (&'e Example, String)> {
        let fail = |message: String| Err((example, message));
        let mapped = match (self.apply(&example.input), &example.error) {
            (Err(e), Some(code)) if e.code() == code => return Ok(()),
            (Err(e), _) => return fail(format!("mapping failed: {e}")),
            (Ok(_), Some(code)) => return fail(format!("expected error `{code}`, got a mapping")),
            (Ok(m), None) => m,
        };
        if let Some(expected) = &example.expected
            && mapped.values != *expected
        {
            let (want, got) = (expected.to_json(), mapped.values.to_json());
            let differing: Vec<String> = want
                .keys()
                .chain(got.keys())
                .filter(|k| want.get(*k) != got.get(*k))
                .map(|k| {
                    let show = |v: Option<&serde_json::Value>| {
                        v.map_or_else(|| "(absent)".to_owned(), ToString::to_string)
                    };
                    format!(
                        "\n  {k}: expected {}, got {}",
                        show(want.get(k)),
                        show(got.get(k))
                    )
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            return fail(format!("canonical values differ:{}", differing.concat()));
        }
        let mut problems: Vec<String> = mapped
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.source_path, p.reason.code()))
            .collect();
        problems.sort();
        if problems != example.problems {
            return fail(format!(
                "problems differ\n  expected: {:?}\n  actual:   {:?}",
                example.problems, problems
            ));
        }
        if !mapped.unexpected_fields.is_empty() {
            return fail(format!(
                "input has undocumented fields {:?}",
                mapped.unexpected_fields
            ));
        }
        if let Some(written) = &example.written {
            let body = serde_json::Value::Object(self.reverse(&mapped.values).to_json_body());
            if body != *written {
                return fail(format!(
                    "write-back body differs\n  expected: {written}\n  actual:   {body}"
                ));
            }
        }
        Ok(())
    }
}
