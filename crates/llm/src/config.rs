//! Configuration from the environment, following the OpenAI SDK conventions (`OPENAI_API_KEY`,
//! `OPENAI_BASE_URL`) plus `LEADSCORE_*` settings. Parsing is pure: [`LlmConfig::from_lookup`] takes any lookup.

use std::time::Duration;

/// The model used when `LEADSCORE_MODEL` is not set.
pub const DEFAULT_MODEL: &str = "gpt-4.1-mini";
/// The OpenAI API, used when only `OPENAI_API_KEY` is set.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A configuration value that cannot be used; names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// Whether the model takes `temperature` and `max_tokens` (chat models) or neither, with
/// `max_completion_tokens` instead (reasoning models such as o3 or gpt-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Chat,
    Reasoning,
}

impl ModelKind {
    /// Guesses from the model name; a 400 naming `temperature` or `max_tokens` corrects a wrong guess.
    pub fn guess(model: &str) -> ModelKind {
        let m = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
        let o_series = m.starts_with('o') && m[1..].starts_with(|c: char| c.is_ascii_digit());
        if o_series || m.starts_with("gpt-5") { ModelKind::Reasoning } else { ModelKind::Chat }
    }
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Prices {
    /// List prices of common OpenAI models (per 1M tokens); unknown models cost 0 until
    /// `LEADSCORE_PRICE_INPUT_PER_MTOK` / `LEADSCORE_PRICE_OUTPUT_PER_MTOK` say otherwise.
    pub fn for_model(model: &str) -> Prices {
        const TABLE: &[(&str, f64, f64)] = &[
            ("gpt-4.1-nano", 0.10, 0.40),
            ("gpt-4.1-mini", 0.40, 1.60),
            ("gpt-4.1", 2.00, 8.00),
            ("gpt-4o-mini", 0.15, 0.60),
            ("gpt-4o", 2.50, 10.00),
            ("gpt-5-nano", 0.05, 0.40),
            ("gpt-5-mini", 0.25, 2.00),
            ("gpt-5", 1.25, 10.00),
            ("o4-mini", 1.10, 4.40),
            ("o3-mini", 1.10, 4.40),
            ("o3", 2.00, 8.00),
        ];
        let name = model.rsplit('/').next().unwrap_or(model);
        // Longest prefix first: the table lists specific names before their families.
        TABLE.iter().find(|(prefix, _, _)| name.starts_with(prefix)).map_or(
            Prices { input_per_mtok: 0.0, output_per_mtok: 0.0 },
            |&(_, i, o)| Prices { input_per_mtok: i, output_per_mtok: o },
        )
    }

    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_mtok + completion_tokens as f64 * self.output_per_mtok) / 1e6
    }
}

/// Everything the AI layer needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub api_key: Option<String>,
    /// Without the trailing `/chat/completions`, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    pub kind: ModelKind,
    /// One HTTP request at most.
    pub request_timeout: Duration,
    /// HTTP requests per job attempt at most (transient failures are retried within the attempt).
    pub max_tries: u32,
    /// All tries of one attempt, waits included, at most.
    pub deadline: Duration,
    /// Global budget of requests per minute.
    pub rpm: u32,
    /// Global budget of tokens per minute.
    pub tpm: u32,
    pub prices: Prices,
    /// How long a cached verdict is reused.
    pub cache_ttl: Duration,
    /// `redis://...`: shared limiter, breaker and cache for several worker processes.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key: deployments sharing one Redis but not one provider account differ here.
    pub redis_prefix: String,
}

impl LlmConfig {
    /// Reads the process environment. `Ok(None)`: no provider configured (neither `OPENAI_API_KEY` nor
    /// `OPENAI_BASE_URL`), the AI layer is off.
    pub fn from_env() -> Result<Option<LlmConfig>, ConfigError> {
        LlmConfig::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<LlmConfig>, ConfigError> {
        let api_key = get("OPENAI_API_KEY");
        let base_url = get("OPENAI_BASE_URL");
        if api_key.is_none() && base_url.is_none() {
            return Ok(None);
        }
        let base_url = base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let base_url = base_url.trim().trim_end_matches('/').trim_end_matches("/chat/completions").to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ConfigError {
                var: "OPENAI_BASE_URL",
                message: format!("must start with http:// or https://, got {base_url:?}"),
            });
        }
        let model = get("LEADSCORE_MODEL").unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        let kind = match get("LEADSCORE_MODEL_KIND").as_deref() {
            None | Some("auto") => ModelKind::guess(&model),
            Some("chat") => ModelKind::Chat,
            Some("reasoning") => ModelKind::Reasoning,
            Some(other) => {
                return Err(ConfigError {
                    var: "LEADSCORE_MODEL_KIND",
                    message: format!("must be auto, chat or reasoning, got {other:?}"),
                });
            }
        };
        let listed = Prices::for_model(&model);
        let prices = Prices {
            input_per_mtok: number(&get, "LEADSCORE_PRICE_INPUT_PER_MTOK")?.unwrap_or(listed.input_per_mtok),
            output_per_mtok: number(&get, "LEADSCORE_PRICE_OUTPUT_PER_MTOK")?
                .unwrap_or(listed.output_per_mtok),
        };
        Ok(Some(LlmConfig {
            api_key,
            base_url,
            kind,
            model,
            request_timeout: secs(&get, "LEADSCORE_REQUEST_TIMEOUT_SECS", 30.0)?,
            max_tries: positive(&get, "LEADSCORE_LLM_MAX_TRIES", 4)?,
            deadline: secs(&get, "LEADSCORE_LLM_DEADLINE_SECS", 120.0)?,
            rpm: positive(&get, "LEADSCORE_RPM", 500)?,
            tpm: positive(&get, "LEADSCORE_TPM", 200_000)?,
            prices,
            cache_ttl: secs(&get, "LEADSCORE_CACHE_TTL_SECS", 7.0 * 86_400.0)?,
            redis_url: get("REDIS_URL"),
            redis_prefix: get("LEADSCORE_REDIS_PREFIX").unwrap_or_else(|| crate::REDIS_PREFIX.to_owned()),
        }))
    }

    /// A configuration for `base_url` with defaults for everything else (tests, benchmarks).
    pub fn for_base_url(base_url: &str, model: &str) -> LlmConfig {
        let mut c = LlmConfig::from_lookup(|k| match k {
            "OPENAI_BASE_URL" => Some(base_url.to_owned()),
            "LEADSCORE_MODEL" => Some(model.to_owned()),
            _ => None,
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| unreachable!("a base URL always configures the AI layer"));
        c.base_url = base_url.trim_end_matches('/').to_owned();
        c
    }
}

fn number(get: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<Option<f64>, ConfigError> {
    match get(var) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
            _ => Err(ConfigError { var, message: format!("must be a non-negative number, got {v:?}") }),
        },
    }
}

fn secs(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: f64,
) -> Result<Duration, ConfigError> {
    match number(get, var)? {
        Some(n) if n > 0.0 => Ok(Duration::from_secs_f64(n)),
        Some(_) => Err(ConfigError { var, message: "must be more than 0 seconds".into() }),
        None => Ok(Duration::from_secs_f64(default)),
    }
}

fn positive(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u32,
) -> Result<u32, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError { var, message: format!("must be a positive whole number, got {v:?}") }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Option<LlmConfig>, ConfigError> {
        LlmConfig::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn no_key_and_no_base_url_turns_the_ai_layer_off() {
        assert_eq!(config(&[("LEADSCORE_MODEL", "gpt-4o")]), Ok(None));
    }

    #[test]
    fn a_key_alone_means_openai_with_the_default_model() {
        let c = config(&[("OPENAI_API_KEY", "sk-test")]).expect("valid").expect("on");
        assert_eq!((c.base_url.as_str(), c.model.as_str()), (DEFAULT_BASE_URL, DEFAULT_MODEL));
        assert_eq!((c.kind, c.rpm, c.max_tries), (ModelKind::Chat, 500, 4));
        assert_eq!(c.prices, Prices { input_per_mtok: 0.40, output_per_mtok: 1.60 });
    }

    #[test]
    fn base_urls_are_normalised_and_checked() {
        let c = config(&[("OPENAI_BASE_URL", "http://localhost:11434/v1/chat/completions")]).expect("ok");
        assert_eq!(c.expect("on").base_url, "http://localhost:11434/v1");
        let e = config(&[("OPENAI_BASE_URL", "localhost:11434")]).expect_err("no scheme");
        assert_eq!(e.var, "OPENAI_BASE_URL");
    }

    #[test]
    fn bad_numbers_name_their_variable() {
        for (var, value) in [
            ("LEADSCORE_RPM", "0"),
            ("LEADSCORE_TPM", "lots"),
            ("LEADSCORE_REQUEST_TIMEOUT_SECS", "-1"),
            ("LEADSCORE_PRICE_INPUT_PER_MTOK", "NaN"),
            ("LEADSCORE_MODEL_KIND", "big"),
        ] {
            let e = config(&[("OPENAI_API_KEY", "k"), (var, value)]).expect_err(var);
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(value) || e.to_string().contains("more than 0"), "{e}");
        }
    }

    #[test]
    fn model_kinds_and_prices() {
        for (model, kind) in [
            ("o3-mini", ModelKind::Reasoning),
            ("gpt-5-mini", ModelKind::Reasoning),
            ("openai/o4-mini", ModelKind::Reasoning),
            ("gpt-4.1-mini", ModelKind::Chat),
            ("llama3.1:8b", ModelKind::Chat),
            ("ollama", ModelKind::Chat),
        ] {
            assert_eq!(ModelKind::guess(model), kind, "{model}");
        }
        assert_eq!(Prices::for_model("gpt-4o-mini-2024-07-18").input_per_mtok, 0.15);
        assert_eq!(Prices::for_model("gpt-4o-2024-08-06").input_per_mtok, 2.50);
        assert_eq!(Prices::for_model("llama3").cost(1_000_000, 1_000_000), 0.0);
        let p = Prices { input_per_mtok: 0.4, output_per_mtok: 1.6 };
        assert!((p.cost(1000, 100) - 0.00056).abs() < 1e-12);
        let overridden = config(&[("OPENAI_API_KEY", "k"), ("LEADSCORE_PRICE_OUTPUT_PER_MTOK", "3")])
            .expect("ok")
            .expect("on");
        assert_eq!(overridden.prices.output_per_mtok, 3.0);
    }
}
