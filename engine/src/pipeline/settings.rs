//! The settings text a generated image carries: one formatter for every model family, written
//! the way AUTOMATIC1111 writes its `parameters` PNG text (prompt line, `Negative prompt:` line,
//! then `Key: value` pairs), so tools that read those files read tessera's too.

use crate::sampling::{GuidanceSchedule, SamplerKind, SamplerOptions};

/// What conditioned a generation.
#[derive(Clone, Copy, Debug)]
pub enum Condition<'a> {
    /// Text-to-image: the prompt and, where the model has an unconditional branch
    /// (classifier-free guidance), the negative prompt.
    Text {
        prompt: &'a str,
        negative_prompt: &'a str,
    },
    /// Class-conditional (MaskGIT's ImageNet checkpoints): the label and its name if known.
    Class { label: u32, name: Option<&'a str> },
}

/// Everything an image records about how it was made.
#[derive(Clone, Copy, Debug)]
pub struct Settings<'a> {
    pub condition: Condition<'a>,
    pub sampler: &'a SamplerOptions,
    /// Classifier-free guidance scale; `None` for models without an unconditional branch.
    pub guidance: Option<f32>,
    /// Image size in pixels (width, height).
    pub size: (usize, usize),
    /// The model as the user named it (folder, file or hub id).
    pub model: &'a str,
    /// How a two-stage model's stages ran; `None` for a model of one stage.
    pub stages: Option<Stages>,
}

/// How a two-stage model's stages ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stages {
    /// The base stage alone (`--stages 1`).
    BaseOnly,
    /// Both stages, the super-resolution stage with this many steps.
    Both { super_res_steps: usize },
}

impl Stages {
    /// How a run of `model` with `super_res` runs its stages (`None`: one-stage model).
    pub fn of(
        model: &super::Model,
        super_res: &super::SuperResOptions,
        steps: usize,
    ) -> Option<Self> {
        (model.stages() == 2).then_some(if super_res.skip {
            Stages::BaseOnly
        } else {
            Stages::Both {
                super_res_steps: steps,
            }
        })
    }
}

impl Settings<'_> {
    /// The `parameters` text: e.g.
    /// `blue heart\nNegative prompt: \nSteps: 12, Sampler: amused, Schedule: cosine, CFG scale: 10,
    /// Choice temperature: 2:0, Seed: 1, Size: 64x64, Model: emoji`.
    pub fn parameters(&self) -> String {
        let o = self.sampler;
        let mut text = match self.condition {
            Condition::Text {
                prompt,
                negative_prompt,
            } => format!("{prompt}\nNegative prompt: {negative_prompt}\n"),
            Condition::Class { label, name } => match name {
                Some(n) => format!("class {label} ({n})\n"),
                None => format!("class {label}\n"),
            },
        };
        let mut pairs = vec![
            ("Steps", o.steps.to_string()),
            ("Sampler", o.kind.to_string()),
        ];
        if o.uses_schedule() {
            pairs.push(("Schedule", o.schedule.to_string()));
        }
        if let Some(g) = self.guidance {
            pairs.push(("CFG scale", g.to_string()));
            if o.guidance_schedule != GuidanceSchedule::Constant {
                pairs.push(("Guidance schedule", o.guidance_schedule.to_string()));
            }
        }
        if o.uses_schedule() {
            pairs.push((
                "Choice temperature",
                format!("{}:{}", o.choice_temperature.0, o.choice_temperature.1),
            ));
        }
        if o.kind == SamplerKind::Paella {
            pairs.push((
                "Softmax temperature",
                format!("{}:{}", o.softmax_temperature.0, o.softmax_temperature.1),
            ));
        }
        // Recorded for Paella (0: off), where the published v1 settings turn it on, and for
        // any run that filters.
        match o.typical_mass {
            Some(mass) => pairs.push(("Typical mass", mass.to_string())),
            None if o.kind == SamplerKind::Paella => pairs.push(("Typical mass", "0".into())),
            None => {}
        }
        match self.stages {
            Some(Stages::BaseOnly) => pairs.push(("Stages", "1".into())),
            Some(Stages::Both { super_res_steps }) => {
                pairs.push(("Stages", "2".into()));
                pairs.push(("Super-res steps", super_res_steps.to_string()));
            }
            None => {}
        }
        pairs.push(("Seed", o.seed.to_string()));
        pairs.push(("Size", format!("{}x{}", self.size.0, self.size.1)));
        pairs.push(("Model", self.model.to_owned()));
        let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        text.push_str(&joined.join(", "));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_class_settings_read_as_parameters() {
        let mut o = SamplerOptions::amused(7);
        let text = Settings {
            condition: Condition::Text {
                prompt: "🍎 apple",
                negative_prompt: "blur",
            },
            sampler: &o,
            guidance: Some(3.5),
            size: (64, 48),
            model: "emoji",
            stages: None,
        }
        .parameters();
        assert_eq!(
            text,
            "🍎 apple\nNegative prompt: blur\nSteps: 12, Sampler: amused, Schedule: cosine, \
             CFG scale: 3.5, Choice temperature: 2:0, Seed: 7, Size: 64x48, Model: emoji"
        );
        o.kind = SamplerKind::Paella;
        let class = Settings {
            condition: Condition::Class {
                label: 207,
                name: Some("golden retriever"),
            },
            sampler: &o,
            guidance: None,
            size: (256, 256),
            model: "maskgit",
            stages: None,
        }
        .parameters();
        assert!(class.starts_with("class 207 (golden retriever)\nSteps: 12"));
        assert!(!class.contains("CFG") && !class.contains("Negative prompt"));
        assert!(class.contains("Softmax temperature: 1:0.2"));
        assert!(class.contains("Typical mass: 0"));
        assert!(!class.contains("Schedule") && !class.contains("Choice temperature"));
        assert!(!class.contains("Stages"));
        o.kind = SamplerKind::Amused;
        let two = |stages| {
            Settings {
                condition: Condition::Text {
                    prompt: "green apple",
                    negative_prompt: "",
                },
                sampler: &o,
                guidance: Some(4.0),
                size: (128, 128),
                model: "emoji",
                stages: Some(stages),
            }
            .parameters()
        };
        assert!(
            two(Stages::Both { super_res_steps: 8 })
                .contains("Stages: 2, Super-res steps: 8, Seed")
        );
        let base = two(Stages::BaseOnly);
        assert!(base.contains("Stages: 1, Seed") && !base.contains("Super-res"));
    }
}
