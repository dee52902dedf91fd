use proptest::prelude::*;

use super::*;

const HEADER: &str = "name,role,company,industry,location,linkedin_bio\n";

fn read(input: &[u8]) -> Result<Vec<Row>, HeaderError> {
    let reader = LeadReader::new(input, Limits::default())?;
    Ok(reader.map(|r| r.expect("no io error")).collect())
}

fn accepted(rows: &[Row]) -> Vec<(u64, &str)> {
    rows.iter()
        .filter_map(|r| match r {
            Row::Accepted { line, lead } => Some((*line, lead.name.as_str())),
            Row::Rejected(_) => None,
        })
        .collect()
}

fn rejected(rows: &[Row]) -> Vec<(u64, Option<&str>, &str)> {
    rows.iter()
        .filter_map(|r| match r {
            Row::Rejected(r) => Some((r.line, r.column.as_deref(), r.message.as_str())),
            Row::Accepted { .. } => None,
        })
        .collect()
}

#[test]
fn reads_the_original_sample() {
    let csv = format!(
        "{HEADER}John Doe,CEO,TechCorp,B2B SaaS,New York,15 years building enterprise SaaS platforms\n\
         Jane Smith,Head of Sales,DataFlow,B2B SaaS,San Francisco,Leading sales teams in scaling startups\n\
         Mike Wilson,Manager,CloudTech,Healthcare,London,Technology implementation specialist\n"
    );
    let rows = read(csv.as_bytes()).expect("header ok");
    assert_eq!(accepted(&rows), [(2, "John Doe"), (3, "Jane Smith"), (4, "Mike Wilson")]);
    let Row::Accepted { lead, .. } = &rows[1] else { panic!("accepted") };
    assert_eq!(lead.role, "Head of Sales");
    assert_eq!(lead.linkedin_bio, "Leading sales teams in scaling startups");
}

#[test]
fn normalises_headers_aliases_and_keeps_extras() {
    let csv = "\u{FEFF} Full Name ;Job Title;Company;Sector;Location;LinkedIn Bio;CRM ID;Deal Size\r\n\
               Ann;CTO;Acme;SaaS;Paris;Builds things;crm-1;50k\r\n";
    let reader = LeadReader::new(csv.as_bytes(), Limits::default()).expect("header ok");
    // The record id keeps its own header too: a re-import into the CRM matches on it.
    assert_eq!(reader.extra_columns(), ["CRM ID", "Deal Size"]);
    assert_eq!(reader.delimiter(), b';');
    let rows: Vec<Row> = reader.map(|r| r.expect("io")).collect();
    let Row::Accepted { lead, .. } = &rows[0] else { panic!("accepted: {rows:?}") };
    assert_eq!((lead.name.as_str(), lead.role.as_str(), lead.industry.as_str()), ("Ann", "CTO", "SaaS"));
    assert_eq!(lead.external_id.as_deref(), Some("crm-1"));
    let attributes: Vec<(&str, &str)> =
        lead.attributes.iter().map(|a| (a.name.as_str(), a.value.as_str())).collect();
    assert_eq!(attributes, [("CRM ID", "crm-1"), ("Deal Size", "50k")]);
}

#[test]
fn split_names_and_locations_are_joined_and_kept_as_attributes() {
    let csv = "Record ID,First Name,Last Name,Job Title,Company Name,Industry,City,State/Region,Country/Region,Email\n\
               101,José,Müller,CTO,Acme,SaaS,Munich,Bavaria,Germany,jm@acme.example\n\
               102,,Park,VP Sales,Lumen,SaaS,,,South Korea,\n\
               103,N/A,,CEO,Nameless,SaaS,Paris,,France,\n";
    let reader = LeadReader::new(csv.as_bytes(), Limits::default()).expect("header ok");
    let sources: Vec<(&str, Vec<String>)> =
        reader.sources().into_iter().map(|(f, h)| (f.as_str(), h)).collect();
    let named = |h: &[&str]| h.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        sources,
        [
            ("name", named(&["First Name", "Last Name"])),
            ("role", named(&["Job Title"])),
            ("company", named(&["Company Name"])),
            ("industry", named(&["Industry"])),
            ("location", named(&["City", "State/Region", "Country/Region"])),
            ("linkedin_bio", named(&[])),
            ("external_id", named(&["Record ID"])),
        ]
    );
    assert_eq!(
        reader.extra_columns(),
        ["Record ID", "First Name", "Last Name", "City", "State/Region", "Country/Region", "Email"]
    );
    let rows: Vec<Row> = reader.map(|r| r.expect("io")).collect();
    let leads: Vec<(&str, &str)> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Accepted { lead, .. } => Some((lead.name.as_str(), lead.location.as_str())),
            Row::Rejected(_) => None,
        })
        .collect();
    assert_eq!(leads, [("José Müller", "Munich, Bavaria, Germany"), ("Park", "South Korea")]);
    // A row whose name parts are all blank is rejected naming both columns.
    assert_eq!(rejected(&rows), [(4, Some("First Name + Last Name"), "name is required")]);
    let Row::Accepted { lead, .. } = &rows[0] else { panic!("accepted") };
    assert!(lead.attributes.iter().any(|a| a.name == "City" && a.value == "Munich"), "{lead:?}");
}

#[test]
fn a_whole_field_wins_over_its_parts() {
    let csv = "Name,First Name,Last Name,Title,Company,Location,City\nAda Park,Ada,Park,CTO,Acme,\"Seoul, KR\",Seoul\n";
    let reader = LeadReader::new(csv.as_bytes(), Limits::default()).expect("header ok");
    let rows: Vec<Row> = reader.map(|r| r.expect("io")).collect();
    let Row::Accepted { lead, .. } = &rows[0] else { panic!("accepted: {rows:?}") };
    assert_eq!((lead.name.as_str(), lead.location.as_str()), ("Ada Park", "Seoul, KR"));
    assert_eq!(lead.attributes.len(), 3, "{lead:?}");
}

#[test]
fn every_header_alias_maps_to_its_field() {
    for line in data_lines(HEADER_ALIASES) {
        let (field, aliases) = line.split_once(':').expect("format");
        for alias in aliases.split(',').map(str::trim) {
            assert_eq!(ALIASES.get(&header_key(alias)).map(|f| f.as_str()), Some(field.trim()), "{alias}");
            let shouted = alias.to_uppercase().replace(' ', "_");
            assert_eq!(
                ALIASES.get(&header_key(&shouted)).map(|f| f.as_str()),
                Some(field.trim()),
                "{shouted}"
            );
        }
    }
}

#[test]
fn one_error_lists_every_missing_column() {
    let err = read(b"Email,Notes\nx,w\n").expect_err("missing");
    let HeaderError::MissingColumns { missing, found } = &err else { panic!("{err}") };
    assert_eq!(missing, &["name", "role", "company"]);
    assert_eq!(found, &["Email", "Notes"]);
    let msg = err.to_string();
    assert!(msg.starts_with("missing required columns: name, role, company."), "{msg}");
    // A name (or its parts) and a role or a company are enough: the other fields are read when present.
    let rows = read(b"First Name,Last Name,Company\nAda,Park,Acme\n").expect("header ok");
    assert_eq!(accepted(&rows), [(2, "Ada Park")]);
}

#[test]
fn header_problems() {
    assert!(matches!(read(b""), Err(HeaderError::Empty)));
    assert!(matches!(read(b"\n\r\n\n"), Err(HeaderError::Empty)));
    assert!(matches!(
        read(b"\xFF\xFEn\x00a\x00"),
        Err(HeaderError::NotUtf8 | HeaderError::MissingColumns { .. })
    ));
    let err = read(b"name,role,title,company,industry,location,bio\n").expect_err("dup");
    assert_eq!(err.to_string(), "column `role` appears twice in the header: as `role` and as `title`");
}

#[test]
fn row_rules() {
    let csv = format!(
        "{HEADER}\
         Ann,CEO,Acme,SaaS,Paris,bio\n\
         ,CEO,Acme,SaaS,Paris,bio\n\
         N/A,CEO,Acme,SaaS,Paris,bio\n\
         Bob,n/a,-,SaaS,Paris,bio\n\
         Ann,CEO,Acme,SaaS,Paris,bio\n\
         Cid,CEO,Acme\n\
         \n\
         ,,,,,\n\
         Dee,CEO,Acme,SaaS,Paris,bio,,\n\
         Eve,CEO,Acme,SaaS,Paris,bio,extra\n\
         Fay,\"VP, Sales\",\"Acme\nInc\",SaaS,Paris,bio\n\
         Gus,CEO,Acme,SaaS,N/A,bio\n"
    );
    let rows = read(csv.as_bytes()).expect("header ok");
    assert_eq!(accepted(&rows), [(2, "Ann"), (10, "Dee"), (12, "Fay"), (14, "Gus")]);
    assert_eq!(
        rejected(&rows),
        [
            (3, Some("name"), "name is required"),
            (4, Some("name"), "name is required"),
            (5, Some("role"), "a role or a company is required"),
            (6, None, "duplicate of line 2"),
            (7, None, "expected 6 fields, found 3"),
            (11, None, "expected 6 fields, found 7"),
        ]
    );
}

#[test]
fn bad_rows_do_not_stop_the_rest() {
    let long = "x".repeat(Limits::default().max_field_bytes + 1);
    let mut csv = format!("{HEADER}Ann,CEO,Acme,SaaS,Paris,{long}\n").into_bytes();
    csv.extend_from_slice(b"Bj\xF6rn,CEO,Acme,SaaS,Paris,bio\n");
    csv.extend_from_slice(b"Cid,\"CEO,Acme,SaaS,Paris,bio\n");
    csv.extend_from_slice(b"Dee,CEO,Acme,SaaS,Paris,bio\n");
    let rows = read(&csv).expect("header ok");
    assert_eq!(accepted(&rows), [(5, "Dee")]);
    let rej = rejected(&rows);
    assert_eq!(rej[0], (2, Some("linkedin_bio"), "`linkedin_bio` is longer than 16384 bytes"));
    assert_eq!(rej[1].0, 3);
    assert_eq!(rej[1].1, Some("name"));
    assert!(rej[1].2.starts_with("not valid UTF-8"));
    assert_eq!(rej[2].0, 4);
    assert!(rej[2].2.starts_with("unterminated quote"), "{}", rej[2].2);
}

#[test]
fn a_million_rows_are_not_needed_to_prove_streaming_but_chunking_is_exercised() {
    let mut csv = HEADER.to_owned();
    for i in 0..5000 {
        csv.push_str(&format!("Lead {i},CEO,Company {i},SaaS,Berlin,\"Bio line one\nline two of {i}\"\n"));
    }
    let rows = read(csv.as_bytes()).expect("header ok");
    assert_eq!(accepted(&rows).len(), 5000);
    assert_eq!(accepted(&rows)[4999], (2 + 2 * 4999, "Lead 4999"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let limits = Limits { max_field_bytes: 64, max_fields: 16, max_record_bytes: 256 };
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(&body);
        if let Ok(reader) = LeadReader::new(input.as_slice(), limits) {
            let mut last_line = 0;
            for row in reader {
                let line = match row.expect("slices do not fail") {
                    Row::Accepted { line, .. } => line,
                    Row::Rejected(r) => r.line,
                };
                prop_assert!(line > last_line, "lines go forward: {line} after {last_line}");
                last_line = line;
            }
        }
        let _ = LeadReader::new(body.as_slice(), limits).map(|r| r.count());
    }

    #[test]
    fn never_panics_on_csv_like_text(body in proptest::collection::vec(
        prop_oneof![Just(b','), Just(b'"'), Just(b'\n'), Just(b'\r'), Just(b';'), Just(b'a'), Just(b' ')], 0..2048)) {
        let limits = Limits { max_field_bytes: 32, max_fields: 8, max_record_bytes: 128 };
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(&body);
        if let Ok(reader) = LeadReader::new(input.as_slice(), limits) {
            for row in reader {
                row.expect("slices do not fail");
            }
        }
    }
}

#[test]
fn a_mapping_names_the_columns_and_the_rest_is_still_found() {
    let csv = "Given,Family,Position,Org,Sector,Town,Nation,CRM Key\nAda,Park,CTO,Acme,SaaS,Seoul,KR,k-1\n";
    let mapping = Mapping::parse(
        r#"{"name": ["Given", "Family"], "company": "Org", "location": ["Town", "Nation"], "external_id": "CRM Key"}"#,
    )
    .expect("mapping");
    let reader = LeadReader::with_mapping(csv.as_bytes(), Limits::default(), Some(&mapping)).expect("header");
    // `Position` and `Sector` are still found by their aliases.
    let sources: Vec<(Field, Vec<String>)> = reader.sources();
    assert_eq!(sources[1], (Field::Role, vec!["Position".to_owned()]));
    let rows: Vec<Row> = reader.map(|r| r.expect("io")).collect();
    let Row::Accepted { lead, .. } = &rows[0] else { panic!("accepted: {rows:?}") };
    let got = (lead.name.as_str(), lead.company.as_str(), lead.industry.as_str(), lead.location.as_str());
    assert_eq!(got, ("Ada Park", "Acme", "SaaS", "Seoul, KR"));
    assert_eq!(lead.external_id.as_deref(), Some("k-1"));
}

#[test]
fn a_mapping_overrides_a_guess_and_bad_mappings_are_named() {
    // `Company` would be guessed as the company; the mapping says the account is.
    let csv = "Name,Title,Company,Account\nAnn,CEO,Parent Corp,Acme Ltd\n";
    let mapping = Mapping::parse(r#"{"company": "Account"}"#).expect("mapping");
    let reader = LeadReader::with_mapping(csv.as_bytes(), Limits::default(), Some(&mapping)).expect("header");
    let rows: Vec<Row> = reader.map(|r| r.expect("io")).collect();
    let Row::Accepted { lead, .. } = &rows[0] else { panic!("accepted: {rows:?}") };
    assert_eq!(lead.company, "Acme Ltd");
    assert!(lead.attributes.iter().any(|a| a.name == "Company" && a.value == "Parent Corp"), "{lead:?}");

    let missing = Mapping::parse(r#"{"role": "Job Title"}"#).expect("mapping");
    let err =
        LeadReader::with_mapping(csv.as_bytes(), Limits::default(), Some(&missing)).expect_err("missing");
    assert!(err.to_string().starts_with("the mapping names the column `Job Title` for `role`"), "{err}");
    let twice = Mapping::parse(r#"{"name": "Name", "company": "name"}"#).expect("mapping");
    let err = LeadReader::with_mapping(csv.as_bytes(), Limits::default(), Some(&twice)).expect_err("twice");
    assert_eq!(err.to_string(), "the mapping uses the column `Name` twice");
    for bad in [r#"{"nom": "Name"}"#, r#"["Name"]"#, r#"{"name": 3}"#, r#"{"name": []}"#, "{"] {
        assert!(Mapping::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_second_part_or_record_id_is_kept_as_an_attribute_not_an_error() {
    let csv =
        "Name,Title,Company,City,State,Region,Lead ID,Contact ID\nAnn,CEO,Acme,Lyon,ARA,Europe,L-1,C-1\n";
    let reader = LeadReader::new(csv.as_bytes(), Limits::default()).expect("header");
    let rows: Vec<Row> = reader.map(|r| r.expect("io")).collect();
    let Row::Accepted { lead, .. } = &rows[0] else { panic!("accepted: {rows:?}") };
    assert_eq!((lead.location.as_str(), lead.external_id.as_deref()), ("Lyon, ARA", Some("L-1")));
    assert!(lead.attributes.iter().any(|a| a.name == "Region" && a.value == "Europe"), "{lead:?}");
    assert!(lead.attributes.iter().any(|a| a.name == "Contact ID" && a.value == "C-1"), "{lead:?}");
}
