//! Cross-platform proof without those machines: every WGSL module parses and validates with naga,
//! and every kernel configuration the engine can request (module + entry point + override
//! constants) translates to SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL).

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use tessera_engine::shaders::{KernelSpec, Module, WeightFormat, all_specs};

fn parse(module: Module) -> (naga::Module, naga::valid::ModuleInfo) {
    let src = module.source();
    let parsed = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| {
        panic!("{}: {}", module.name(), e.emit_to_string(&src));
    });
    // Exactly what wgpu grants: SHADER_FLOAT16 with Features::SHADER_F16, and
    // SHADER_FLOAT16_IN_FLOAT32 (unpack2x16float) with the SHADER_F16_IN_F32 downlevel flag,
    // which every Vulkan, Metal and DX12 adapter has.
    let caps = match module {
        // Cooperative matrices exist with the f16 feature on Vulkan and Metal only.
        m if m.needs_cooperative_matrix() => {
            Capabilities::COOPERATIVE_MATRIX
                | Capabilities::SHADER_FLOAT16
                | Capabilities::SHADER_FLOAT16_IN_FLOAT32
        }
        Module::Matmul(WeightFormat::F16)
        | Module::MatmulTile64(WeightFormat::F16)
        | Module::MatmulRows(WeightFormat::F16)
        | Module::MatmulGemv(WeightFormat::F16) => Capabilities::SHADER_FLOAT16,
        Module::Matmul(WeightFormat::F16Packed)
        | Module::MatmulTile64(WeightFormat::F16Packed)
        | Module::MatmulRows(WeightFormat::F16Packed)
        | Module::MatmulGemv(WeightFormat::F16Packed) => Capabilities::SHADER_FLOAT16_IN_FLOAT32,
        _ => Capabilities::empty(),
    };
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&parsed)
        .unwrap_or_else(|e| panic!("{}: {}", module.name(), e.emit_to_string(&src)));
    (parsed, info)
}

#[test]
fn every_module_parses_and_validates() {
    for m in Module::all() {
        parse(m);
    }
}

fn translate(spec: &KernelSpec) {
    let (module, info) = parse(spec.module);
    let mut constants = naga::back::PipelineConstants::default();
    for (k, v) in &spec.constants {
        constants.insert((*k).to_owned(), *v);
    }
    let stage = naga::ShaderStage::Compute;
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((stage, spec.entry)),
        &constants,
    )
    .unwrap_or_else(|e| panic!("{spec}: overrides: {e}"));

    spv::write_vec(
        &module,
        &info,
        &spv::Options::default(),
        Some(&spv::PipelineOptions {
            shader_stage: stage,
            entry_point: spec.entry.to_owned(),
        }),
    )
    .unwrap_or_else(|e| panic!("{spec}: SPIR-V: {e}"));

    let msl_options = msl::Options {
        lang_version: (2, 4),
        ..Default::default()
    };
    msl::write_string(
        &module,
        &info,
        &msl_options,
        &msl::PipelineOptions {
            entry_point: Some((stage, spec.entry.to_owned())),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{spec}: MSL: {e}"));

    // No HLSL or GLSL backend has cooperative matrices (wgpu offers them on Vulkan and Metal).
    if spec.module.needs_cooperative_matrix() {
        return;
    }
    let hlsl_options = hlsl::Options {
        // f16 needs shader model 6.2 (DXC); everything else also compiles for FXC's 5.1.
        shader_model: if spec.module.needs_f16() {
            hlsl::ShaderModel::V6_2
        } else {
            hlsl::ShaderModel::V5_1
        },
        ..Default::default()
    };
    let mut hlsl_out = String::new();
    hlsl::Writer::new(
        &mut hlsl_out,
        &hlsl_options,
        &hlsl::PipelineOptions {
            entry_point: Some((stage, spec.entry.to_owned())),
        },
    )
    .write(&module, &info, None)
    .unwrap_or_else(|e| panic!("{spec}: HLSL: {e}"));

    // GL has no f16 storage; the engine never asks for the native-f16 module there.
    if !spec.module.needs_f16() {
        let mut glsl_out = String::new();
        let options = glsl::Options::default();
        let pipeline = glsl::PipelineOptions {
            shader_stage: stage,
            entry_point: spec.entry.to_owned(),
            multiview: None,
        };
        glsl::Writer::new(
            &mut glsl_out,
            &module,
            &info,
            &options,
            &pipeline,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .and_then(|mut w| w.write())
        .unwrap_or_else(|e| panic!("{spec}: GLSL: {e}"));
    }
}

#[test]
fn every_kernel_configuration_translates_to_spirv_msl_hlsl_glsl() {
    let specs = all_specs();
    assert!(specs.len() > 20, "suspiciously few kernel configurations");
    for spec in &specs {
        translate(spec);
    }
}

#[test]
fn every_entry_point_and_override_is_used_by_some_configuration() {
    let specs = all_specs();
    for m in Module::all() {
        let (module, _) = parse(m);
        for ep in &module.entry_points {
            assert!(
                specs.iter().any(|s| s.module == m && s.entry == ep.name),
                "{}::{} is never requested, so the translation test does not cover it",
                m.name(),
                ep.name
            );
        }
        for (_, o) in module.overrides.iter() {
            let name = o.name.as_deref().unwrap_or_default();
            assert!(
                specs
                    .iter()
                    .any(|s| s.module == m && s.constants.iter().any(|(k, _)| *k == name)),
                "override {name} of {} is never set explicitly",
                m.name()
            );
        }
    }
}

/// Each module's `Params` is generated from its Rust declaration (`kernel_params!`); this checks
/// that WGSL lays it out as `#[repr(C)]` does (uniform-buffer alignment: a `vec4` must start
/// at a multiple of 16 bytes): the same members, at the same offsets, the same size.
#[test]
fn rust_params_match_wgsl_params_layout() {
    for m in Module::all() {
        let (module, _) = parse(m);
        let params = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Params"))
            .unwrap_or_else(|| panic!("{} has no Params struct", m.name()));
        let (members, span) = match &params.1.inner {
            naga::TypeInner::Struct { members, span } => (members, *span as usize),
            other => panic!("{}: Params is {other:?}", m.name()),
        };
        let wgsl: Vec<(&str, usize)> = members
            .iter()
            .map(|mem| (mem.name.as_deref().unwrap_or(""), mem.offset as usize))
            .collect();
        let layout = m.params();
        let rust: Vec<(&str, usize)> = layout.fields.iter().map(|&(n, _, o)| (n, o)).collect();
        assert_eq!(wgsl, rust, "{}: Params members (name, offset)", m.name());
        assert_eq!(
            span,
            layout.size,
            "{}: WGSL Params is {span} bytes, the Rust struct {}",
            m.name(),
            layout.size
        );
    }
}
