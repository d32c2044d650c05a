//! `--from-png IN.png`: the settings a PNG carries (its `parameters` text, as tessera and
//! AUTOMATIC1111 write it) fill every generation option the command line left unset, so
//! `tessera --render out.png --from-png in.png` redoes the image — byte for byte with the same
//! model on the same adapter and kernels — and any option given beside it overrides.

use std::path::Path;

use anyhow::Result;
use tessera_engine::pipeline::Model;

use super::GenerationArgs;

/// What a `parameters` text says, each field as written.
#[derive(Debug, Default, PartialEq)]
pub struct PngSettings {
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub class: Option<u32>,
    /// `Key: value` pairs of the last line, in order.
    pub pairs: Vec<(String, String)>,
}

impl PngSettings {
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `parameters` text: the prompt (or `class N (name)`), an optional
/// `Negative prompt:` line, and a last line of `Key: value` pairs separated by `, `.
pub fn parse(text: &str) -> PngSettings {
    let lines: Vec<&str> = text.lines().collect();
    let (head, last) = match lines.split_last() {
        Some((last, head)) if last.contains(": ") => (head, Some(*last)),
        _ => (&lines[..], None),
    };
    let pairs = last
        .map(|l| {
            l.split(", ")
                .filter_map(|kv| kv.split_once(": "))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let negative_at = head.iter().position(|l| l.starts_with("Negative prompt:"));
    let prompt_lines = &head[..negative_at.unwrap_or(head.len())];
    let negative_prompt = negative_at.map(|i| {
        let mut v = vec![head[i].trim_start_matches("Negative prompt:").trim_start()];
        v.extend(&head[i + 1..]);
        v.join("\n")
    });
    let prompt = prompt_lines.join("\n");
    // tessera's class-conditional form: `class 207` or `class 207 (golden retriever)`.
    let class = (negative_at.is_none() && prompt_lines.len() == 1)
        .then(|| prompt.strip_prefix("class "))
        .flatten()
        .and_then(|rest| rest.split(' ').next()?.parse().ok());
    PngSettings {
        prompt: (class.is_none() && !prompt_lines.is_empty()).then_some(prompt),
        negative_prompt,
        class,
        pairs,
    }
}

/// `g` with every option it leaves unset taken from `png`'s settings; values tessera cannot
/// use (another tool's sampler, a model that is not here) are skipped with a warning.
pub fn apply(g: &GenerationArgs, png: &Path) -> Result<GenerationArgs> {
    let s = parse(&crate::files::png_parameters(png)?);
    let mut g = g.clone();
    let skip = |key: &str, value: &str, why: String| {
        log::warn!("{}: {key}: {value:?} not used: {why}", png.display());
    };
    if g.prompt.is_empty() && g.class.is_none() {
        match (s.class, &s.prompt) {
            (Some(c), _) => g.class = Some(c),
            (None, Some(p)) => g.prompt.clone_from(p),
            _ => {}
        }
    }
    if g.negative_prompt.is_empty()
        && let Some(n) = &s.negative_prompt
    {
        g.negative_prompt.clone_from(n);
    }
    macro_rules! take {
        ($field:ident, $key:literal, $parse:expr) => {
            if g.$field.is_none()
                && let Some(v) = s.get($key)
            {
                match $parse(v) {
                    Ok(x) => g.$field = Some(x),
                    Err(e) => skip($key, v, format!("{e}")),
                }
            }
        };
    }
    take!(seed, "Seed", |v: &str| v
        .parse::<u64>()
        .map_err(|e| e.to_string()));
    take!(steps, "Steps", |v: &str| v
        .parse::<usize>()
        .map_err(|e| e.to_string()));
    take!(guidance, "CFG scale", |v: &str| v
        .parse::<f32>()
        .map_err(|e| e.to_string()));
    take!(sampler, "Sampler", |v: &str| v.parse());
    take!(schedule, "Schedule", |v: &str| v.parse());
    take!(choice_temperature, "Choice temperature", |v: &str| Ok::<
        _,
        String,
    >(
        v.to_owned()
    ));
    take!(softmax_temperature, "Softmax temperature", |v: &str| Ok::<
        _,
        String,
    >(
        v.to_owned()
    ));
    take!(guidance_schedule, "Guidance schedule", |v: &str| v.parse());
    take!(stages, "Stages", |v: &str| v
        .parse::<usize>()
        .map_err(|e| e.to_string()));
    take!(sr_steps, "Super-res steps", |v: &str| v
        .parse::<usize>()
        .map_err(|e| e.to_string()));
    take!(typical_mass, "Typical mass", |v: &str| v
        .parse::<f32>()
        .map_err(|e| e.to_string()));
    if g.model.is_none()
        && let Some(m) = s.get("Model")
        && m != "emoji"
    {
        match Model::locate(m) {
            Ok(_) => g.model = Some(m.to_owned()),
            Err(e) => skip("Model", m, format!("{e}; using the embedded model")),
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tessera_and_automatic1111_texts_parse() {
        let t = parse(
            "blue heart\nNegative prompt: dull\nSteps: 12, Sampler: amused, Schedule: pow:2, \
             CFG scale: 3.5, Choice temperature: 2:0, Seed: 7, Size: 64x64, Model: emoji",
        );
        assert_eq!(t.prompt.as_deref(), Some("blue heart"));
        assert_eq!(t.negative_prompt.as_deref(), Some("dull"));
        assert_eq!(t.class, None);
        assert_eq!(t.get("Schedule"), Some("pow:2"));
        assert_eq!(t.get("Seed"), Some("7"));
        assert_eq!(t.get("Model"), Some("emoji"));
        let c = parse("class 207 (golden retriever)\nSteps: 8, Sampler: maskgit, Seed: 1");
        assert_eq!((c.class, c.prompt), (Some(207), None));
        let a = parse(
            "a cat,\nin the rain\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG \
             scale: 7, Seed: 42, Size: 512x512, Model hash: abc, Model: sd15",
        );
        assert_eq!(a.prompt.as_deref(), Some("a cat,\nin the rain"));
        assert_eq!(a.get("Sampler"), Some("Euler a"));
        assert_eq!(a.get("CFG scale"), Some("7"));
        assert_eq!(
            parse("just a prompt").prompt.as_deref(),
            Some("just a prompt")
        );
    }
}
