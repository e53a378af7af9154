//! Heredocs (`<<EOF`, `<<-EOF`, `3<<"EOF"`) on ADD, COPY and RUN lines:
//! finding their words on an instruction's line and reading each word's
//! delimiter, quoting and tab-stripping flag, as BuildKit's parser does.

use super::super::shell::{EmptyEnv, Lex};
use super::{Heredoc, Node};

pub(super) fn can_contain_heredoc(node: &Node) -> bool {
    let target = match (&node.nested, node.name().as_str()) {
        (Some(nested), "onbuild") => nested.as_ref(),
        _ => node,
    };
    matches!(target.name().as_str(), "add" | "copy" | "run") && !target.json
}

/// Finds the heredoc words (`<<EOF`, `<<-EOF`, `3<<"EOF"`) on a line.
pub(super) fn heredocs_from_line(line: &str) -> std::result::Result<Vec<Heredoc>, String> {
    let lex = Lex {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..Lex::new('\\')
    };
    let words = lex.process_words(line, &EmptyEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// `^(\d*)<<(-?)([^<]*)$` and the quoting check on the delimiter.
pub fn parse_heredoc(word: &str) -> std::result::Result<Option<Heredoc>, String> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    // An out-of-range descriptor becomes 0, as Go's ParseUint error does.
    let file_descriptor = word[..digits].parse().unwrap_or(0);

    let mut lex = Lex {
        skip_unset_env: true,
        ..Lex::new('\\')
    };
    let words = lex.process_words(rest, &EmptyEnv).map_err(|e| e.message)?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &EmptyEnv).map_err(|e| e.message)?;
    if raw.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let count = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let name = words.into_iter().next().unwrap_or_default();
    Ok(Some(Heredoc {
        expand: count(&name) == count(&raw[0]),
        name,
        file_descriptor,
        chomp,
        content: String::new(),
    }))
}

/// Removes leading tabs from every line of a `<<-` heredoc body.
#[must_use]
pub fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}
