//! Keeps personal data out of logs and stored error messages built from API bodies.

/// Longest API-provided text we keep in a message.
const MAX_LEN: usize = 300;

/// Replaces anything shaped like an email address or a long number (phone, NHS, account)
/// with a placeholder, and caps the length. Field names and plain reasons survive.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LEN));
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains('@') {
            out.push_str("<email>");
        } else {
            out.push_str(word);
        }
    }
    let out = redact_numbers(&out);
    if out.chars().count() > MAX_LEN {
        let cut: String = out.chars().take(MAX_LEN).collect();
        format!("{cut}…")
    } else {
        out
    }
}

/// Runs of six or more digits, even with single spaces, dashes or a leading `+` between them.
fn redact_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit()
            || (chars[i] == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            let mut digits = 0;
            let mut end = i;
            let mut j = i;
            while j < chars.len() {
                let c = chars[j];
                if c.is_ascii_digit() {
                    digits += 1;
                    end = j + 1;
                    j += 1;
                    continue;
                }
                let leading_plus = c == '+' && j == start;
                let joiner = matches!(c, ' ' | '-' | '(' | ')');
                let digits_follow = chars
                    .get(j + 1)
                    .is_some_and(|n| n.is_ascii_digit() || *n == '(');
                if !(leading_plus || (joiner && digits_follow)) {
                    break;
                }
                j += 1;
            }
            if digits >= 6 {
                out.push_str("<number>");
            } else {
                out.extend(&chars[start..end.max(start + 1)]);
            }
            i = end.max(start + 1);
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn emails_and_long_numbers_are_hidden() {
        let cases = [
            (
                "email Anna.M@example.com already exists",
                "email <email> already exists",
            ),
            (
                "nhs_number: 485 777 3456 is invalid",
                "nhs_number: <number> is invalid",
            ),
            ("phone +44 7700 900123 bad", "phone <number> bad"),
            ("page 2 of 54, per_page 100", "page 2 of 54, per_page 100"),
            (
                "Please try again in 7 second(s).",
                "Please try again in 7 second(s).",
            ),
            ("dob 1946-03-25 wrong", "dob <number> wrong"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn long_text_is_capped() {
        let long = "word ".repeat(200);
        assert!(redact(&long).chars().count() <= 301);
    }
}
