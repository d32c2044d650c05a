//! Flax checkpoints as `flax.serialization.to_bytes(variables)` writes them: one msgpack map of
//! nested maps whose leaves are arrays, each a msgpack ext object of type 1 whose payload is
//! itself msgpack `[shape, dtype name, raw little-endian bytes]` (type 3 is a NumPy scalar with
//! the same payload; arrays over 1 GiB are split into `__msgpack_chunked_array__` maps).
//!
//! [`FlaxFile`] reads every array into f32 (float32, float16 and bfloat16 are accepted) under its
//! `/`-joined key path (`params/Embed_0/word_embeddings/embedding`). [`FlaxLoader`] hands them to
//! model constructors, converting Flax layouts to the engine's on the way (Dense kernels are
//! `[in, out]`, conv kernels HWIO) and, unlike [`Loader`](super::Loader), rejecting arrays the
//! model never asked for: a Flax file carries no config, so its arrays must fit the architecture
//! inferred from it exactly.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::Path;
use std::rc::Rc;

use rmpv::ValueRef;

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Tensor};

/// Flax nests maps shallowly; this bounds recursion on hostile input (rmpv counts every value
/// and container it descends through).
const MAX_DEPTH: usize = 256;
/// flax.serialization's ext type codes.
const EXT_NDARRAY: i8 = 1;
const EXT_NPSCALAR: i8 = 3;
const CHUNKED: &str = "__msgpack_chunked_array__";

/// Element type of an array as stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
}

impl StoredDType {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "float32" => Some(Self::F32),
            "float16" => Some(Self::F16),
            "bfloat16" => Some(Self::BF16),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }

    fn widen(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Self::F32 => bytemuck::pod_collect_to_vec(bytes),
            Self::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes)
                .into_iter()
                .map(f32::from)
                .collect(),
            Self::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(bytes)
                .into_iter()
                .map(f32::from)
                .collect(),
        }
    }
}

/// One array of a Flax file, widened to f32.
#[derive(Clone, Debug)]
pub struct FlaxTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// How the file stored it (`None` for arrays made in memory).
    pub stored: Option<StoredDType>,
}

/// Every array of one Flax variables file by `/`-joined key path.
pub struct FlaxFile {
    source: String,
    tensors: BTreeMap<String, FlaxTensor>,
}

impl FlaxFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = super::files::read(path).map_err(|e| Error::file(path, e))?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// Parses the bytes of a `to_bytes` file; `source` names it in errors.
    pub fn parse(bytes: &[u8], source: &str) -> Result<Self> {
        let mut rd = bytes;
        let root = rmpv::decode::read_value_ref_with_max_depth(&mut rd, MAX_DEPTH)
            .map_err(|e| Error::file(source, format!("not a Flax msgpack checkpoint: {e}")))?;
        if !rd.is_empty() {
            return Err(Error::file(
                source,
                format!(
                    "not a Flax msgpack checkpoint: {} bytes follow the top-level value",
                    rd.len()
                ),
            ));
        }
        let ValueRef::Map(entries) = root else {
            return Err(Error::file(
                source,
                format!(
                    "not a Flax msgpack checkpoint: the top level is {}, expected a map",
                    kind(&root)
                ),
            ));
        };
        let mut file = Self {
            source: source.to_owned(),
            tensors: BTreeMap::new(),
        };
        let mut path = Vec::new();
        file.walk(&entries, &mut path)?;
        Ok(file)
    }

    /// A file made in memory (synthetic weights, tests): `(path, shape, values)` per array.
    pub fn from_tensors(
        source: &str,
        tensors: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
    ) -> Result<Self> {
        let mut map = BTreeMap::new();
        for (name, shape, data) in tensors {
            if shape.iter().product::<usize>() != data.len() {
                return Err(Error::file(
                    source,
                    format!(
                        "key path {name}: shape {shape:?} needs {} values, got {}",
                        shape.iter().product::<usize>(),
                        data.len()
                    ),
                ));
            }
            let t = FlaxTensor {
                shape,
                data,
                stored: None,
            };
            if map.insert(name.clone(), t).is_some() {
                return Err(Error::file(
                    source,
                    format!("key path {name} appears twice"),
                ));
            }
        }
        Ok(Self {
            source: source.to_owned(),
            tensors: map,
        })
    }

    /// Where the arrays came from (the file path).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Key paths in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn get(&self, path: &str) -> Option<&FlaxTensor> {
        self.tensors.get(path)
    }

    pub fn shape(&self, path: &str) -> Option<&[usize]> {
        self.tensors.get(path).map(|t| t.shape.as_slice())
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of values.
    pub fn numel(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }

    /// The array at `path` with exactly `shape`: a missing path or another shape is an error
    /// naming both.
    pub fn expect(&self, path: &str, shape: &[usize]) -> Result<&FlaxTensor> {
        let t = self.require(path)?;
        if t.shape != shape {
            return Err(Error::TensorShape {
                name: path.to_owned(),
                file: self.source.clone(),
                got: t.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(t)
    }

    /// The array at `path` (any shape), or a missing-tensor error.
    pub fn require(&self, path: &str) -> Result<&FlaxTensor> {
        self.tensors.get(path).ok_or_else(|| Error::MissingTensor {
            name: path.to_owned(),
            file: self.source.clone(),
        })
    }

    /// The shape of `path` if it has `rank` dimensions, else an error naming the path.
    pub fn shape_of_rank(&self, path: &str, rank: usize) -> Result<&[usize]> {
        let t = self.require(path)?;
        if t.shape.len() != rank {
            return Err(Error::file(
                &self.source,
                format!(
                    "key path {path}: shape {:?} has rank {}, expected {rank}",
                    t.shape,
                    t.shape.len()
                ),
            ));
        }
        Ok(&t.shape)
    }

    /// The numbers `i` of the children `{prefix}{i}` (e.g. `params/TransformerLayer_`) present
    /// anywhere in the file, ascending.
    pub fn indices(&self, prefix: &str) -> BTreeSet<usize> {
        self.names()
            .filter_map(|n| n.strip_prefix(prefix))
            .filter_map(|rest| rest.split('/').next()?.parse().ok())
            .collect()
    }

    fn error(&self, path: &[String], message: impl Display) -> Error {
        let at = if path.is_empty() {
            "top level".to_owned()
        } else {
            format!("key path {}", path.join("/"))
        };
        Error::file(&self.source, format!("{at}: {message}"))
    }

    fn walk(
        &mut self,
        entries: &[(ValueRef<'_>, ValueRef<'_>)],
        path: &mut Vec<String>,
    ) -> Result<()> {
        for (k, v) in entries {
            let key = match k {
                ValueRef::String(s) => s.as_str().map(str::to_owned),
                _ => None,
            }
            .ok_or_else(|| self.error(path, format!("a key is {}, expected a string", kind(k))))?;
            path.push(key);
            match v {
                ValueRef::Map(children) if is_chunked(children) => {
                    let t = self.unchunk(children, path)?;
                    self.insert(path, t)?;
                }
                ValueRef::Map(children) => self.walk(children, path)?,
                ValueRef::Ext(code, payload) if *code == EXT_NDARRAY || *code == EXT_NPSCALAR => {
                    let t = self.array(payload, path)?;
                    self.insert(path, t)?;
                }
                ValueRef::Ext(code, _) => {
                    return Err(self.error(
                        path,
                        format!(
                            "msgpack ext type {code} is not an array (type {EXT_NDARRAY}) \
                             or NumPy scalar (type {EXT_NPSCALAR})"
                        ),
                    ));
                }
                other => {
                    return Err(self.error(
                        path,
                        format!("found {}, expected an array or a map", kind(other)),
                    ));
                }
            }
            path.pop();
        }
        Ok(())
    }

    fn insert(&mut self, path: &[String], t: FlaxTensor) -> Result<()> {
        if self.tensors.insert(path.join("/"), t).is_some() {
            return Err(self.error(path, "appears twice"));
        }
        Ok(())
    }

    /// Decodes one ext payload `[shape, dtype name, bytes]`.
    fn array(&self, payload: &[u8], path: &[String]) -> Result<FlaxTensor> {
        let mut rd = payload;
        let value = rmpv::decode::read_value_ref_with_max_depth(&mut rd, 16)
            .map_err(|e| self.error(path, format!("array payload is not msgpack: {e}")))?;
        let bad = |what: &str| self.error(path, format!("array payload {what}"));
        if !rd.is_empty() {
            return Err(bad("has trailing bytes"));
        }
        let ValueRef::Array(parts) = value else {
            return Err(bad("is not a [shape, dtype, data] list"));
        };
        let [shape, dtype, data] = parts.as_slice() else {
            return Err(bad("is not a [shape, dtype, data] list"));
        };
        let ValueRef::Array(dims) = shape else {
            return Err(bad("shape is not a list"));
        };
        let shape = dims
            .iter()
            .map(|d| as_usize(d).ok_or_else(|| bad("shape holds a non-integer")))
            .collect::<Result<Vec<_>>>()?;
        let dtype_name = match dtype {
            ValueRef::String(s) => s.as_str(),
            _ => None,
        }
        .ok_or_else(|| bad("dtype is not a string"))?;
        let dtype = StoredDType::parse(dtype_name).ok_or_else(|| {
            self.error(
                path,
                format!("dtype {dtype_name} is not supported (float32, float16 or bfloat16)"),
            )
        })?;
        let bytes: &[u8] = match data {
            ValueRef::Binary(b) => b,
            ValueRef::String(s) => s.as_bytes(),
            _ => return Err(bad("data is not a byte string")),
        };
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("shape overflows"))?;
        if numel.checked_mul(dtype.size()) != Some(bytes.len()) {
            return Err(self.error(
                path,
                format!(
                    "shape {shape:?} of {dtype_name} needs {} bytes, the file holds {}",
                    numel.saturating_mul(dtype.size()),
                    bytes.len()
                ),
            ));
        }
        Ok(FlaxTensor {
            shape,
            data: dtype.widen(bytes),
            stored: Some(dtype),
        })
    }

    /// Joins a `{__msgpack_chunked_array__, shape: {"0": d0, ..}, chunks: {"0": array, ..}}` map.
    fn unchunk(
        &self,
        entries: &[(ValueRef<'_>, ValueRef<'_>)],
        path: &[String],
    ) -> Result<FlaxTensor> {
        let bad = |what: &str| self.error(path, format!("chunked array {what}"));
        let field = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| key_is(k, name))
                .map(|(_, v)| v)
                .ok_or_else(|| bad(&format!("lacks {name:?}")))
        };
        let shape = numbered(field("shape")?)
            .ok_or_else(|| bad("shape is not a numbered map"))?
            .into_iter()
            .map(|d| as_usize(d).ok_or_else(|| bad("shape holds a non-integer")))
            .collect::<Result<Vec<_>>>()?;
        let mut data = Vec::new();
        let mut stored = None;
        for chunk in
            numbered(field("chunks")?).ok_or_else(|| bad("chunks is not a numbered map"))?
        {
            let ValueRef::Ext(EXT_NDARRAY, payload) = chunk else {
                return Err(bad("chunk is not an array"));
            };
            let t = self.array(payload, path)?;
            if stored.is_some_and(|s| Some(s) != t.stored) {
                return Err(bad("mixes dtypes"));
            }
            stored = t.stored;
            data.extend(t.data);
        }
        if shape.iter().product::<usize>() != data.len() {
            return Err(bad(&format!(
                "holds {} values for shape {shape:?}",
                data.len()
            )));
        }
        Ok(FlaxTensor {
            shape,
            data,
            stored,
        })
    }
}

fn kind(v: &ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Nil => "nil",
        ValueRef::Boolean(_) => "a boolean",
        ValueRef::Integer(_) => "an integer",
        ValueRef::F32(_) | ValueRef::F64(_) => "a float",
        ValueRef::String(_) => "a string",
        ValueRef::Binary(_) => "a byte string",
        ValueRef::Array(_) => "a list",
        ValueRef::Map(_) => "a map",
        ValueRef::Ext(..) => "an ext object",
    }
}

fn key_is(k: &ValueRef<'_>, name: &str) -> bool {
    matches!(k, ValueRef::String(s) if s.as_str() == Some(name))
}

fn is_chunked(entries: &[(ValueRef<'_>, ValueRef<'_>)]) -> bool {
    entries.iter().any(|(k, _)| key_is(k, CHUNKED))
}

fn as_usize(v: &ValueRef<'_>) -> Option<usize> {
    match v {
        ValueRef::Integer(i) => usize::try_from(i.as_u64()?).ok(),
        _ => None,
    }
}

/// The values of a `{"0": v0, "1": v1, ..}` map (flax's encoding of tuples) in index order.
fn numbered<'v, 'a>(v: &'v ValueRef<'a>) -> Option<Vec<&'v ValueRef<'a>>> {
    let ValueRef::Map(entries) = v else {
        return None;
    };
    let mut out: Vec<Option<&ValueRef<'a>>> = vec![None; entries.len()];
    for (k, v) in entries {
        let ValueRef::String(s) = k else {
            return None;
        };
        let i: usize = s.as_str()?.parse().ok()?;
        *out.get_mut(i)? = Some(v);
    }
    out.into_iter().collect()
}

/// `data` (row-major, `shape`) with its dimensions reordered: output dim i is input dim `perm[i]`.
fn permute_host(data: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let rank = shape.len();
    let mut in_strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * shape[d + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; rank];
    let mut offset = 0usize;
    for _ in 0..data.len() {
        out.push(data[offset]);
        // Odometer over the output index, tracking the input offset.
        for d in (0..rank).rev() {
            index[d] += 1;
            offset += strides[d];
            if index[d] < out_shape[d] {
                break;
            }
            offset -= strides[d] * out_shape[d];
            index[d] = 0;
        }
    }
    out
}

/// Hands a [`FlaxFile`]'s arrays to a model constructor under a `/`-joined prefix
/// (`l.pp("TransformerLayer_3").pp("Mlp_0")`), converting layouts where asked.
#[derive(Clone)]
pub struct FlaxLoader<'a> {
    ctx: &'a GpuContext,
    file: &'a FlaxFile,
    prefix: String,
    check_only: bool,
    used: Rc<RefCell<BTreeSet<String>>>,
}

impl<'a> FlaxLoader<'a> {
    /// Runs `build` once checking every array it asks for (nothing uploaded), fails on the first
    /// array of the file it never asked for, then runs it again to upload.
    pub fn load<T>(
        ctx: &'a GpuContext,
        file: &'a FlaxFile,
        what: &str,
        build: impl Fn(&FlaxLoader<'a>) -> Result<T>,
    ) -> Result<T> {
        let mut l = FlaxLoader {
            ctx,
            file,
            prefix: String::new(),
            check_only: true,
            used: Rc::new(RefCell::new(BTreeSet::new())),
        };
        build(&l)?;
        {
            let used = l.used.borrow();
            if let Some(name) = file.names().find(|n| !used.contains(*n)) {
                let shape = file.shape(name).unwrap_or_default();
                return Err(Error::file(
                    file.source(),
                    format!(
                        "unexpected array {name} {shape:?}: not part of the {what} inferred \
                         from this file ({} of its {} arrays fit)",
                        used.len(),
                        file.len()
                    ),
                ));
            }
        }
        l.check_only = false;
        build(&l)
    }

    /// A loader one level down.
    pub fn pp(&self, part: impl Display) -> FlaxLoader<'a> {
        FlaxLoader {
            prefix: self.path(&part.to_string()),
            used: Rc::clone(&self.used),
            ..*self
        }
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// The full key path of `name` under this prefix.
    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Checks `name` has `shape`, marks it used, and returns it unless only checking.
    fn get(&self, name: &str, shape: &[usize]) -> Result<(String, Option<&'a FlaxTensor>)> {
        let path = self.path(name);
        let t = self.file.expect(&path, shape)?;
        self.ctx
            .check_binding(&path, crate::gpu::byte_len(shape, DType::F32))?;
        self.used.borrow_mut().insert(path.clone());
        Ok((path, (!self.check_only).then_some(t)))
    }

    /// The array as stored, of exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        match self.get(name, shape)? {
            (path, Some(t)) => Tensor::from_f32(self.ctx, &path, shape, &t.data),
            (path, None) => Tensor::placeholder(self.ctx, &path, shape, DType::F32),
        }
    }

    /// Arrays `names` of equal `shape` (one for a plain array), each with its dimensions
    /// reordered as `perm` says, stacked along the output's dim 0 (e.g. query, key and value
    /// kernels as one matmul weight).
    pub fn permuted_stacked(
        &self,
        names: &[&str],
        shape: &[usize],
        perm: &[usize],
    ) -> Result<Tensor> {
        check_permutation(perm, shape.len())?;
        let mut out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        out_shape[0] *= names.len();
        let label = names
            .iter()
            .map(|n| self.path(n))
            .collect::<Vec<_>>()
            .join("+");
        let parts = names
            .iter()
            .map(|n| self.get(n, shape))
            .collect::<Result<Vec<_>>>()?;
        // Weights are bound whole: check the binding limit before anything is uploaded.
        self.ctx
            .check_binding(&label, crate::gpu::byte_len(&out_shape, DType::F32))?;
        if self.check_only {
            return Tensor::placeholder(self.ctx, &label, &out_shape, DType::F32);
        }
        let data = crate::io::loader::concat(
            parts
                .into_iter()
                .filter_map(|(_, t)| t)
                .map(|t| permute_host(&t.data, shape, perm))
                .collect(),
        );
        Tensor::from_f32(self.ctx, &label, &out_shape, &data)
    }

    /// The array of `shape` with its dimensions reordered (output dim i is stored dim
    /// `perm[i]`), e.g. `[1, 0]` turns a Dense kernel `[in, out]` into a Linear weight
    /// `[out, in]` and `[3, 2, 0, 1]` a conv kernel HWIO into OIHW.
    pub fn permuted(&self, name: &str, shape: &[usize], perm: &[usize]) -> Result<Tensor> {
        self.permuted_stacked(&[name], shape, perm)
    }
}

/// `perm` must reorder exactly `rank` dims.
fn check_permutation(perm: &[usize], rank: usize) -> Result<()> {
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if perm.len() != rank || sorted.iter().enumerate().any(|(i, &p)| i != p) {
        return Err(Error::shape(
            "flax permute",
            format!("{perm:?} is not a permutation of {rank} dims"),
        ));
    }
    Ok(())
}
