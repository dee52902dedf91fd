//! Industry fit against the offer's ideal use cases: exact ICP match (+20) or adjacent industry (+10).

use std::collections::HashSet;
use std::sync::LazyLock;

use serde::Serialize;

use crate::text::{data_lines, words};

pub(crate) const SYNONYMS: &str = include_str!("../../data/industry_synonyms.txt");
pub(crate) const GENERIC_WORDS: &str = include_str!("../../data/generic_words.txt");
pub(crate) const FILLER_WORDS: &str = include_str!("../../data/filler_words.txt");

static FILLER: LazyLock<HashSet<String>> = LazyLock::new(|| word_set(FILLER_WORDS));
static GENERIC: LazyLock<HashSet<String>> = LazyLock::new(|| word_set(GENERIC_WORDS));
static GROUPS: LazyLock<Vec<Vec<Key>>> = LazyLock::new(|| {
    data_lines(SYNONYMS)
        .map(|line| line.split('|').map(Key::new).filter(|k| !k.0.is_empty()).collect())
        .collect()
});

fn word_set(file: &str) -> HashSet<String> {
    data_lines(file).flat_map(words).map(|w| stem(&w)).collect()
}

/// Folds simple English plurals so that "agencies" meets "agency" and "teams" meets "team". Short words are
/// left alone ("saas", "news").
fn stem(word: &str) -> String {
    if word.len() < 5 {
        word.to_owned()
    } else if let Some(base) = word.strip_suffix("ies") {
        format!("{base}y")
    } else if word.ends_with('s') && !["ss", "us", "is"].iter().any(|e| word.ends_with(e)) {
        word[..word.len() - 1].to_owned()
    } else {
        word.to_owned()
    }
}

/// An industry in comparable form: normalised, stemmed words without filler such as "company" or "inc".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key(Vec<String>);

impl Key {
    pub(crate) fn new(industry: &str) -> Self {
        let filler = &*FILLER;
        Key(words(industry).iter().map(|w| stem(w)).filter(|w| !filler.contains(w)).collect())
    }

    fn contains(&self, other: &Key) -> bool {
        !other.0.is_empty() && self.0.windows(other.0.len()).any(|w| w == other.0.as_slice())
    }

    fn in_group(&self, group: &[Key]) -> bool {
        group.iter().any(|entry| self.contains(entry))
    }
}

/// Why two industries count as adjacent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Adjacency {
    /// One contains the other as whole words ("B2B SaaS startup" and "B2B SaaS").
    Contains,
    /// Both fall in one synonym group ("Cloud Software" and "SaaS").
    Synonyms,
    /// They share a word that is not generic ("Digital Health" and "Health Insurance").
    SharedWord(String),
}

/// How a lead's industry relates to the offer's ideal use cases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "match")]
pub enum IndustryMatch {
    Exact { icp: String },
    Adjacent { icp: String, why: Adjacency },
}

/// The offer's ideal use cases, prepared once per offer.
#[derive(Debug, Clone)]
pub struct Icp {
    entries: Vec<(String, Key)>,
}

impl Icp {
    pub fn new<S: AsRef<str>>(ideal_use_cases: &[S]) -> Self {
        let entries = ideal_use_cases
            .iter()
            .map(|s| (s.as_ref().to_owned(), Key::new(s.as_ref())))
            .filter(|(_, k)| !k.0.is_empty())
            .collect();
        Icp { entries }
    }

    /// The best match of `industry` over all ICP entries: an exact match anywhere wins over adjacency. An
    /// empty industry (or one of only filler words) never matches.
    pub fn match_industry(&self, industry: &str) -> Option<IndustryMatch> {
        let lead = Key::new(industry);
        if lead.0.is_empty() {
            return None;
        }
        if let Some((icp, _)) = self.entries.iter().find(|(_, k)| *k == lead) {
            return Some(IndustryMatch::Exact { icp: icp.clone() });
        }
        self.entries.iter().find_map(|(icp, k)| {
            adjacency(&lead, k).map(|why| IndustryMatch::Adjacent { icp: icp.clone(), why })
        })
    }
}

fn adjacency(a: &Key, b: &Key) -> Option<Adjacency> {
    if a.contains(b) || b.contains(a) {
        return Some(Adjacency::Contains);
    }
    if GROUPS.iter().any(|g| a.in_group(g) && b.in_group(g)) {
        return Some(Adjacency::Synonyms);
    }
    let generic = &*GENERIC;
    a.0.iter().find(|w| !generic.contains(*w) && b.0.contains(w)).map(|w| Adjacency::SharedWord(w.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(industry: &str, icp: &[&str]) -> Option<IndustryMatch> {
        Icp::new(icp).match_industry(industry)
    }

    fn kind(m: Option<IndustryMatch>) -> &'static str {
        match m {
            Some(IndustryMatch::Exact { .. }) => "exact",
            Some(IndustryMatch::Adjacent { .. }) => "adjacent",
            None => "none",
        }
    }

    #[test]
    fn exact_adjacent_and_none() {
        let cases = [
            ("B2B SaaS", &["B2B SaaS"][..], "exact"),
            ("b2b saas", &["B2B SaaS"], "exact"),
            ("B2B SaaS company", &["B2B SaaS"], "exact"),
            ("B2B-SaaS, Inc.", &["B2B SaaS"], "exact"),
            ("Marketing Agency", &["B2B SaaS", "Marketing agencies"], "exact"),
            ("B2B SaaS startup", &["B2B SaaS"], "adjacent"),
            ("Sales", &["Sales teams"], "adjacent"),
            ("Cloud Software", &["SaaS"], "adjacent"),
            ("Financial Technology", &["Fintech"], "adjacent"),
            ("Digital Health", &["Health Insurance"], "adjacent"),
            ("Healthcare", &["B2B SaaS"], "none"),
            ("IT Services", &["Financial Services"], "none"),
            ("", &["B2B SaaS"], "none"),
            ("N/A company", &["B2B SaaS"], "none"),
            ("Company", &["Company"], "none"),
            ("B2B Marketing", &["B2B SaaS"], "none"),
            ("Tech", &["Technology"], "none"),
        ];
        for (industry, icp, want) in cases {
            assert_eq!(kind(matches(industry, icp)), want, "{industry:?} vs {icp:?}");
        }
    }

    #[test]
    fn exact_anywhere_beats_an_earlier_adjacent_entry() {
        let m = matches("B2B SaaS", &["B2B SaaS startup", "B2B SaaS"]);
        assert_eq!(m, Some(IndustryMatch::Exact { icp: "B2B SaaS".into() }));
    }

    #[test]
    fn reports_why_industries_are_adjacent() {
        let why = |i, icp| match matches(i, &[icp]) {
            Some(IndustryMatch::Adjacent { why, .. }) => Some(why),
            _ => None,
        };
        assert_eq!(why("B2B SaaS startup", "B2B SaaS"), Some(Adjacency::Contains));
        assert_eq!(why("Cloud Software", "SaaS"), Some(Adjacency::Synonyms));
        assert_eq!(why("Digital Health", "Health Insurance"), Some(Adjacency::SharedWord("health".into())));
    }

    #[test]
    fn plurals_are_folded_but_short_words_kept() {
        assert_eq!(stem("agencies"), "agency");
        assert_eq!(stem("teams"), "team");
        assert_eq!(stem("saas"), "saas");
        assert_eq!(stem("business"), "business");
        assert_eq!(stem("analysis"), "analysis");
    }

    #[test]
    fn every_synonym_group_links_all_its_entries() {
        for line in data_lines(SYNONYMS) {
            let entries: Vec<&str> = line.split('|').map(str::trim).collect();
            for a in &entries {
                for b in &entries {
                    assert_ne!(kind(matches(a, &[b])), "none", "{a:?} vs {b:?} in group {line:?}");
                }
            }
        }
    }

    #[test]
    fn every_generic_word_alone_does_not_link_industries() {
        for g in data_lines(GENERIC_WORDS) {
            assert_eq!(kind(matches(&format!("Alpha {g}"), &[&format!("Bravo {g}")])), "none", "{g}");
        }
    }

    #[test]
    fn every_filler_word_is_ignored() {
        for f in data_lines(FILLER_WORDS) {
            assert_eq!(kind(matches(&format!("B2B SaaS {f}"), &["B2B SaaS"])), "exact", "{f}");
            assert_eq!(kind(matches(f, &[f])), "none", "{f} alone is not an industry");
        }
    }
}
