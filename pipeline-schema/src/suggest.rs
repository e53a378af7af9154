//! "did you mean" for misspelt keys, job names, stages and values: the
//! nearest candidate by edit distance (Damerau-Levenshtein, so a swap of two
//! letters counts once), when it is near enough to be a typo.

/// The candidate nearest to `name`, if one is within a third of its length
/// (at least 1, at most 3 edits). Ties go to the first candidate.
pub(crate) fn nearest<'a, I>(name: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = name.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate == name {
            continue;
        }
        let distance = strsim::damerau_levenshtein(&lower, &candidate.to_lowercase());
        let limit = (candidate.chars().count() / 3).clamp(1, 3);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// `did you mean `x`?`, for a hint line.
pub(crate) fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    nearest(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        let keys = ["needs", "stage", "script", "before_script", "image"];
        assert_eq!(nearest("neeeds", keys), Some("needs"));
        assert_eq!(nearest("nedes", keys), Some("needs"));
        assert_eq!(nearest("scirpt", keys), Some("script"));
        assert_eq!(nearest("Stage", keys), Some("stage"));
        assert_eq!(nearest("befor_script", keys), Some("before_script"));
        assert_eq!(nearest("services", keys), None);
        assert_eq!(nearest("x", keys), None);
    }
}
