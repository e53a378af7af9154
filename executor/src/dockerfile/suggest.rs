//! "Did you mean" suggestions: the nearest candidate to a misspelt name by
//! edit distance, for unknown instructions, flags and stage names.

/// Edit distance (optimal string alignment: insertions, deletions,
/// substitutions and swaps of neighbours each cost one), case-insensitive.
#[must_use]
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// BuildKit's `suggest.WrapError` rule: the option nearest to `value` by edit
/// distance, if fewer than three edits away and not an exact match. Without
/// `case_sensitive`, an exact match ignores case and the suggestion takes the
/// case of `value` when that is all upper or all lower case.
pub fn nearest<'a>(
    value: &str,
    options: impl IntoIterator<Item = &'a str>,
    case_sensitive: bool,
) -> Option<String> {
    // Long values are not typos of short names; bound the work too.
    if value.chars().count() > 64 {
        return None;
    }
    let mut best: Option<(usize, &str)> = None;
    for option in options {
        let exact = if case_sensitive {
            value == option
        } else {
            value.to_lowercase() == option.to_lowercase()
        };
        if exact {
            return None;
        }
        let distance = distance(value, option);
        if distance < 3 && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, option));
        }
    }
    let (_, option) = best?;
    Some(if case_sensitive {
        option.to_string()
    } else if value == value.to_lowercase() {
        option.to_lowercase()
    } else if value == value.to_uppercase() {
        option.to_uppercase()
    } else {
        option.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_close_names() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(
            nearest("RUNN", ["run", "from", "copy"], false).as_deref(),
            Some("RUN")
        );
        assert_eq!(
            nearest("bulid", ["build", "test"], true).as_deref(),
            Some("build")
        );
        assert_eq!(nearest("zzz", ["build", "test"], true), None);
        assert_eq!(nearest("build", ["build", "test"], true), None);
    }
}
