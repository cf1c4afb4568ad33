//! A document's text reduced to its tokens, so that matching a client's full query against a
//! trusted document does not depend on formatting: whitespace, commas (insignificant in
//! GraphQL) and comments are dropped, exactly one space separates two adjacent names or values,
//! and the top-level definitions (operations, fragments) are sorted, as Apollo's manifest
//! generator sorts them. Strings are kept verbatim.

/// The normalized text of a GraphQL document.
pub fn normalize(document: &str) -> String {
    let tokens = tokens(document);
    let mut definitions = split_definitions(&tokens);
    definitions.sort_unstable();
    definitions.join(" ")
}

/// Top-level definitions of a token string: each ends where its outermost braces close. Strings
/// are skipped whole (block strings included, whose quotes inside do not end them), so a brace
/// or quote inside one neither opens nor closes anything.
fn split_definitions(tokens: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = tokens.char_indices().collect();
    let plain: Vec<char> = chars.iter().map(|&(_, c)| c).collect();
    let mut definitions = Vec::new();
    let (mut depth, mut start, mut k) = (0usize, 0usize, 0usize);
    while k < chars.len() {
        let (i, c) = chars[k];
        match c {
            '"' => {
                k = string_end(&plain, k);
                continue;
            }
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    definitions.push(tokens[start..=i].trim());
                    start = i + 1;
                }
            }
            _ => {}
        }
        k += 1;
    }
    let rest = tokens[start..].trim();
    if !rest.is_empty() {
        definitions.push(rest);
    }
    definitions
}

/// The document as a string of tokens.
fn tokens(document: &str) -> String {
    let chars: Vec<char> = document.chars().collect();
    let mut out = String::with_capacity(document.len());
    let mut i = 0;
    // Whether the last token written was a name, number or string, and whether a separator
    // came after it: two such tokens need a space between them.
    let mut last_was_word = false;
    let mut separated = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' | ',' | '\u{feff}' => {
                separated = true;
                i += 1;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' && chars[i] != '\r' {
                    i += 1;
                }
                separated = true;
            }
            '"' => {
                if last_was_word {
                    out.push(' ');
                }
                let end = string_end(&chars, i);
                out.extend(&chars[i..end]);
                i = end;
                last_was_word = true;
                separated = false;
            }
            c if c.is_ascii_alphanumeric()
                || c == '_'
                || c == '-'
                || c == '.' && is_number_part(&chars, i) =>
            {
                if last_was_word && separated {
                    out.push(' ');
                }
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || matches!(chars[i], '_' | '-' | '+')
                        || chars[i] == '.' && is_number_part(&chars, i))
                {
                    out.push(chars[i]);
                    i += 1;
                }
                last_was_word = true;
                separated = false;
            }
            other => {
                out.push(other);
                i += 1;
                last_was_word = false;
                separated = false;
            }
        }
    }
    out
}

/// A `.` inside a number (`1.5`), as opposed to a spread (`...`).
fn is_number_part(chars: &[char], i: usize) -> bool {
    i > 0 && chars[i - 1].is_ascii_digit() && chars.get(i + 1).is_some_and(char::is_ascii_digit)
}

/// Where the string starting at `start` ends (exclusive): `"..."` with escapes, or a `"""`
/// block string.
fn string_end(chars: &[char], start: usize) -> usize {
    let block = chars.get(start..start + 3) == Some(&['"', '"', '"']);
    let mut i = start + if block { 3 } else { 1 };
    while i < chars.len() {
        if block {
            if chars.get(i..i + 4) == Some(&['\\', '"', '"', '"']) {
                i += 4;
                continue;
            }
            if chars.get(i..i + 3) == Some(&['"', '"', '"']) {
                return i + 3;
            }
        } else {
            match chars[i] {
                '\\' => {
                    i += 2;
                    continue;
                }
                '"' => return i + 1,
                _ => {}
            }
        }
        i += 1;
    }
    chars.len()
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn quotes_inside_a_block_string_do_not_shift_the_definitions() {
        // An odd number of `"` inside a block string once flipped the splitter's idea of being
        // in a string, and moved a field out of its selection set without changing the text.
        let trusted = r#"query Q { b(s: """x"y""") { b { a(s: """x"y""") } a } }"#;
        let moved = r#"query Q{b(s:"""x"y"""){b{a(s:"""x"y""")}}a}"#;
        assert_ne!(normalize(trusted), normalize(moved));
        assert_eq!(normalize(trusted), normalize(&trusted.replace(' ', "  ")));
    }

    #[test]
    fn formatting_and_comments_do_not_matter() {
        let a = "query MyPatients {\n  patients(first: 20) {\n    edges { node { id, mrn } } # page\n  }\n}\n";
        let b = "query MyPatients{patients(first:20){edges{node{id mrn}}}}";
        assert_eq!(normalize(a), normalize(b));
        assert_eq!(
            normalize(b),
            "query MyPatients{patients(first:20){edges{node{id mrn}}}}"
        );
    }

    #[test]
    fn different_documents_stay_different() {
        assert_ne!(
            normalize("{ patients { edges { node { id } } } }"),
            normalize("{ patients { edges { node { id clinicalNotes } } } }")
        );
        assert_ne!(normalize("{ a(x: 1) }"), normalize("{ a(x: 12) }"));
        assert_ne!(normalize("{ ab }"), normalize("{ a b }"));
    }

    #[test]
    fn strings_are_kept_verbatim() {
        assert_eq!(
            normalize(r#"{ a(s: "x,  # y\"z") }"#),
            r#"{a(s:"x,  # y\"z")}"#
        );
        assert_eq!(
            normalize("{ a(s: \"\"\"b  \"\"\") }"),
            "{a(s:\"\"\"b  \"\"\")}"
        );
    }

    #[test]
    fn the_order_of_definitions_does_not_matter() {
        let fragment_first =
            "fragment F on Patient { id } query Q { patients { edges { node { ...F } } } }";
        let query_first =
            "query Q { patients { edges { node { ...F } } } }\nfragment F on Patient { id }";
        assert_eq!(normalize(fragment_first), normalize(query_first));
        assert_ne!(
            normalize(fragment_first),
            normalize(
                "fragment F on Patient { mrn } query Q { patients { edges { node { ...F } } } }"
            )
        );
    }

    #[test]
    fn spreads_and_numbers() {
        assert_eq!(
            normalize("{ ... on Patient { id } ...F a(f: 1.5, n: -2) }"),
            "{...on Patient{id}...F a(f:1.5 n:-2)}"
        );
    }
}
