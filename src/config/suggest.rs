//! "Did you mean ...?": the known name closest to a mistyped one, for messages about unknown
//! settings, keys and sections.

/// The candidate closest to `word` by edit distance (insertions, deletions, substitutions and
/// swaps of two neighbouring letters, ignoring case), if it is close enough to be a typo of it:
/// at most a third of `word`'s length apart, and at least one edit is always allowed. Ties go
/// to the candidate listed first. None when nothing is that close, or `word` is empty.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word: Vec<char> = word.chars().flat_map(char::to_lowercase).collect();
    if word.is_empty() {
        return None;
    }
    let allowed = (word.len() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let folded: Vec<char> = candidate.chars().flat_map(char::to_lowercase).collect();
        // Lengths that differ by more than the allowance cannot be close enough.
        if folded.len().abs_diff(word.len()) > allowed {
            continue;
        }
        let distance = edit_distance(&word, &folded);
        if distance <= allowed && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Damerau-Levenshtein distance in its "optimal string alignment" form: a swapped pair counts
/// as one edit, and no substring is edited twice.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    // Three rows of the usual table: two back (for swaps), the last, and the one being filled.
    let mut before_last: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut cost = (last[j] + 1)
                .min(current[j - 1] + 1)
                .min(last[j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cost = cost.min(before_last[j - 2] + 1);
            }
            current[j] = cost;
        }
        std::mem::swap(&mut before_last, &mut last);
        std::mem::swap(&mut last, &mut current);
    }
    last[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distance(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        edit_distance(&a, &b)
    }

    #[test]
    fn distance_counts_each_kind_of_edit_once() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("pool_size", "pool_size"), 0);
        assert_eq!(distance("pool_sise", "pool_size"), 1, "substitution");
        assert_eq!(distance("pool_sze", "pool_size"), 1, "insertion");
        assert_eq!(distance("pool_siize", "pool_size"), 1, "deletion");
        assert_eq!(distance("pool_szie", "pool_size"), 1, "swap");
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn the_nearest_plausible_candidate_wins() {
        let names = ["default_pool_size", "min_pool_size", "reserve_pool_size"];
        assert_eq!(
            closest("default_pool_sise", names),
            Some("default_pool_size")
        );
        assert_eq!(closest("min_pol_size", names), Some("min_pool_size"));
        assert_eq!(closest("prot", ["host", "port"]), Some("port"), "a swap");
    }

    #[test]
    fn case_is_ignored_and_the_candidate_returned_as_listed() {
        assert_eq!(closest("Listen_Port", ["listen_port"]), Some("listen_port"));
        assert_eq!(
            closest("listen_port", ["LISTEN_PORTS"]),
            Some("LISTEN_PORTS")
        );
    }

    #[test]
    fn words_too_far_from_every_candidate_get_none() {
        let names = ["listen_addr", "listen_port", "pool_mode"];
        assert_eq!(closest("logfile", names), None);
        assert_eq!(closest("xyz", names), None);
        assert_eq!(closest("", ["a"]), None);
        assert_eq!(closest("anything", []), None);
        // A third of the length: 9 letters allow 3 edits, not 4.
        assert_eq!(closest("pool_mode", ["pxxx_mode"]), Some("pxxx_mode"));
        assert_eq!(closest("pool_mode", ["pxxx_xode"]), None);
    }

    #[test]
    fn short_words_still_allow_one_edit() {
        assert_eq!(closest("hst", ["host"]), Some("host"));
        assert_eq!(closest("ht", ["host"]), None);
    }

    #[test]
    fn ties_go_to_the_first_candidate() {
        assert_eq!(
            closest("pool_sizes", ["pool_size", "pool_sizez"]),
            Some("pool_size")
        );
        assert_eq!(
            closest("pool_sizes", ["pool_sizez", "pool_size"]),
            Some("pool_sizez")
        );
    }
}
