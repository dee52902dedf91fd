//! Files shaped like real CRM and spreadsheet exports (`examples/crm/`: headers as those tools write them, rows
//! invented) read as they are: every row accepted, with the right fields, whatever the encoding.

use std::io::Read;

use leadscore_core::csv::encoding::utf8_source;
use leadscore_core::csv::{LeadReader, Limits, Row};

/// Each fixture, the encoding and delimiter it must be read with, and whether its location has the region.
pub const FIXTURES: [(&str, &str, char, bool); 9] = [
    ("hubspot-contacts.csv", "UTF-8", ',', true),
    ("salesforce-leads.csv", "UTF-8", ',', true),
    ("pipedrive-people.csv", "UTF-8", ',', false),
    ("apollo-contacts.csv", "UTF-8", ',', true),
    ("zoominfo-contacts.csv", "UTF-8", ',', true),
    ("sales-navigator.csv", "UTF-8", ',', true),
    ("excel-csv.csv", "windows-1252", ',', true),
    ("excel-csv-utf8.csv", "UTF-8", ',', true),
    ("excel-unicode-text.txt", "UTF-16LE", '\t', true),
];

/// The leads every fixture holds: (name, role, company, industry, location with region, without).
const LEADS: [(&str, &str, &str, &str, &str, &str); 3] = [
    (
        "José Müller",
        "CTO",
        "Lumen Data GmbH",
        "Computer Software",
        "München, Bavaria, Germany",
        "München, Germany",
    ),
    (
        "Ana Souza",
        "VP Sales",
        "Brightside Ltda",
        "Marketing and Advertising",
        "São Paulo, SP, Brazil",
        "São Paulo, Brazil",
    ),
    ("Liam O'Brien", "Head of Growth", "Orbit Labs", "B2B SaaS", "Dublin, Ireland", "Dublin, Ireland"),
];

fn open(file: &str) -> impl Read {
    let path = format!("{}/../../examples/crm/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_export_reads_as_it_is() {
    for (file, encoding, delimiter, with_region) in FIXTURES {
        let (src, found) = utf8_source(open(file), None).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(found.name(), encoding, "{file}");
        let reader = LeadReader::new(src, Limits::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(reader.delimiter() as char, delimiter, "{file}");
        let leads: Vec<_> = reader
            .map(|row| match row.expect("io") {
                Row::Accepted { lead, .. } => lead,
                Row::Rejected(r) => panic!("{file}: line {} rejected: {}", r.line, r.message),
            })
            .collect();
        let got: Vec<_> = leads
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.role.as_str(),
                    l.company.as_str(),
                    l.industry.as_str(),
                    l.location.as_str(),
                )
            })
            .collect();
        let want: Vec<_> = LEADS
            .iter()
            .map(|&(n, r, c, i, full, short)| (n, r, c, i, if with_region { full } else { short }))
            .collect();
        assert_eq!(got, want, "{file}");
    }
}

#[test]
fn a_crm_record_id_is_the_external_id_and_keeps_its_header() {
    let (src, _) = utf8_source(open("hubspot-contacts.csv"), None).expect("utf-8");
    let reader = LeadReader::new(src, Limits::default()).expect("header");
    assert!(reader.extra_columns().iter().any(|c| c == "Record ID"), "{:?}", reader.extra_columns());
    let Some(Ok(Row::Accepted { lead, .. })) = reader.into_iter().next() else { panic!("a lead") };
    assert_eq!(lead.external_id.as_deref(), Some("5101"));
    let email = lead.attributes.iter().find(|a| a.name == "Email").expect("Email kept");
    assert_eq!(email.value, "jose.mueller@lumen.example");
    assert!(lead.attributes.iter().any(|a| a.name == "Record ID" && a.value == "5101"));
}
