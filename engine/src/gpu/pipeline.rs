//! Shader modules and compute pipelines, created once and cached by [`KernelSpec`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::shaders::{KernelSpec, Module};

#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<Module, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    fn module(&self, device: &wgpu::Device, module: Module) -> Arc<wgpu::ShaderModule> {
        let mut map = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(module).or_insert_with(|| {
            let source = module.source();
            Arc::new(device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(module.name()),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            }))
        }))
    }

    /// The pipeline for `spec`, compiled on first use.
    pub fn get(&self, device: &wgpu::Device, spec: &KernelSpec) -> Arc<wgpu::ComputePipeline> {
        let key = spec.to_string();
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Arc::clone(p);
        }
        let module = self.module(device, spec.module);
        log::debug!("compiling pipeline {key}");
        let pipeline = Arc::new(
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&key),
                layout: None,
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &spec.constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            }),
        );
        let mut map = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(key).or_insert(pipeline))
    }

    /// Number of compiled pipelines.
    pub fn len(&self) -> usize {
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
