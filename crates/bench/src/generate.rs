//! Deterministic, realistic leads: names, titles, companies, industries, cities and bios of typical lengths.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Data rows to write.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

const FIRST: &[&str] = &[
    "John", "Jane", "Priya", "Carlos", "Amélie", "Tom", "Yuki", "Grace", "Olu", "Nina", "Marcus", "Elena",
    "Sam", "Hannah", "Ravi", "Lena", "Ahmed", "Sofia", "Wei", "Fatima",
];
const LAST: &[&str] = &[
    "Doe", "Smith", "Raman", "Mendes", "Laurent", "Becker", "Tanaka", "Kim", "Adeyemi", "Berg", "Hill",
    "Petrova", "Okafor", "Lee", "Shah", "Müller", "Haddad", "Rossi", "Zhang", "Khan",
];
const ROLES: &[&str] = &[
    "CEO",
    "CTO",
    "VP of Sales",
    "Head of Marketing",
    "Sales Manager",
    "Account Executive",
    "Founder",
    "Director of Engineering",
    "Lead Generation Specialist",
    "Marketing Manager",
    "Chief Revenue Officer",
    "Senior Software Engineer",
    "Associate Director of Demand Generation",
    "Geschäftsführer",
    "Business Development Representative",
    "Co-Founder & CEO",
    "Product Owner",
    "Analyst",
];
const COMPANY_A: &[&str] = &[
    "Tech", "Data", "Cloud", "Signal", "Ledger", "Fjord", "Nord", "Bright", "Quantum", "Orbit", "Lumen",
    "Stone",
];
const COMPANY_B: &[&str] = &[
    "Corp",
    "Flow",
    "Labs",
    "Path",
    "Metrics",
    "Works",
    "Systems",
    "Analytics",
    "Line",
    "Bridge",
    "ware",
    "Hub",
];
const INDUSTRIES: &[&str] = &[
    "B2B SaaS",
    "Healthcare",
    "Fintech",
    "Marketing Agency",
    "IT Services",
    "Financial Services",
    "E-commerce",
    "Manufacturing",
    "Cloud Software",
    "B2B SaaS startup",
    "Logistics",
    "Education",
];
const CITIES: &[&str] = &[
    "New York",
    "San Francisco",
    "London",
    "Berlin",
    "Bangalore",
    "Tokyo",
    "Lagos",
    "São Paulo",
    "Toronto",
    "Sydney",
    "Paris",
    "Austin",
];
const BIO: &[&str] = &[
    "Building",
    "enterprise",
    "SaaS",
    "platforms",
    "for",
    "a",
    "decade",
    "leading",
    "sales",
    "teams",
    "in",
    "scaling",
    "startups",
    "with",
    "focus",
    "on",
    "pipeline",
    "growth",
    "and",
    "outbound",
    "experiments",
    "across",
    "EMEA",
    "markets",
    "hiring",
    "SDRs",
    "customer",
    "success",
];

/// xorshift64*: fast, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// One generated lead's six fields (name, role, company, industry, location, bio). The row number keeps every
/// row distinct (duplicates are rejected, and that is not what we measure).
fn fields(rng: &mut Rng, i: u64) -> [String; 6] {
    let words = 6 + rng.next() % 12;
    let mut bio = String::with_capacity(256);
    for w in 0..words {
        if w > 0 {
            bio.push(' ');
        }
        bio.push_str(rng.pick(BIO));
    }
    let name = format!("{} {}", rng.pick(FIRST), rng.pick(LAST));
    let role = rng.pick(ROLES).to_owned();
    let company = format!("{}{} #{i}", rng.pick(COMPANY_A), rng.pick(COMPANY_B));
    let industry = rng.pick(INDUSTRIES).to_owned();
    let location = rng.pick(CITIES).to_owned();
    let bio = format!("{bio}, {}", rng.pick(BIO));
    [name, role, company, industry, location, bio]
}

/// `n` generated leads, deterministic for `seed`; `tag` goes into every bio so that runs can be kept apart
/// (the verdict cache keys on what the model sees).
pub fn leads(n: u64, seed: u64, tag: &str) -> Vec<leadscore_core::Lead> {
    let mut rng = Rng(seed.max(1));
    (0..n)
        .map(|i| {
            let [name, role, company, industry, location, bio] = fields(&mut rng, i);
            leadscore_core::Lead {
                external_id: None,
                name,
                role,
                company,
                industry,
                location,
                linkedin_bio: format!("{bio} {tag}"),
                attributes: Vec::new(),
            }
        })
        .collect()
}

pub fn run(args: &GenArgs) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&args.output)?);
    write_csv(&mut out, args.rows, args.seed)?;
    out.flush()?;
    Ok(())
}

/// The leads CSV of `rows` generated rows (header included), deterministic for `seed`: what `gen` writes to a
/// file, and what benches that upload through the API send as a body.
pub fn write_csv(out: &mut impl Write, rows: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = Rng(seed.max(1));
    out.write_all(b"name,role,company,industry,location,linkedin_bio\n")?;
    for i in 0..rows {
        let [name, role, company, industry, location, bio] = fields(&mut rng, i);
        writeln!(out, "{name},{},{company},{industry},{location},\"{bio}\"", quote(&role))?;
    }
    Ok(())
}

fn quote(s: &str) -> String {
    if s.contains(',') { format!("\"{s}\"") } else { s.to_owned() }
}
