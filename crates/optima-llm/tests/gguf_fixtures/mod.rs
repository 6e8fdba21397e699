//! Shared by the GGUF tests: a hand-made GGUF builder, independent of the library's writer, and
//! small helpers.
#![allow(dead_code)]

use std::path::Path;

use half::f16;
use optima::OptimaError;
use optima_llm::gguf::GgufFile;

pub fn p() -> &'static Path {
    Path::new("test.gguf")
}

pub fn parse(bytes: Vec<u8>) -> optima::Result<GgufFile> {
    GgufFile::from_bytes(bytes, p())
}

pub fn is_format_error(r: optima::Result<GgufFile>) -> String {
    match r {
        Err(e @ OptimaError::Format { .. }) => e.to_string(),
        Err(e) => panic!("expected a format error, got {e:?}"),
        Ok(f) => panic!("expected a format error, got a file {f:?}"),
    }
}

// ---- a hand-made GGUF builder, independent of the library's writer --------------------------

#[derive(Default)]
pub struct Raw {
    pub version: u32,
    pub kv: Vec<u8>,
    pub n_kv: u64,
    pub infos: Vec<u8>,
    pub n_tensors: u64,
    pub data: Vec<u8>,
    pub alignment: usize,
}

impl Raw {
    pub fn new() -> Self {
        Raw { version: 3, alignment: 32, ..Default::default() }
    }
    pub fn string(buf: &mut Vec<u8>, s: &[u8]) {
        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        buf.extend_from_slice(s);
    }
    /// A key with a raw type tag and raw value bytes.
    pub fn kv_raw(&mut self, key: &str, tag: u32, value: &[u8]) -> &mut Self {
        Self::string(&mut self.kv, key.as_bytes());
        self.kv.extend_from_slice(&tag.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.n_kv += 1;
        self
    }
    /// A tensor whose data is appended (aligned) to the data section.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: &[u8]) -> &mut Self {
        let pad = self.data.len().next_multiple_of(self.alignment);
        self.data.resize(pad, 0);
        let offset = self.data.len() as u64;
        self.data.extend_from_slice(data);
        self.tensor_at(name, dims, ty, offset)
    }
    /// A tensor info with an explicit offset and no data.
    pub fn tensor_at(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        Self::string(&mut self.infos, name.as_bytes());
        self.infos.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend_from_slice(&d.to_le_bytes());
        }
        self.infos.extend_from_slice(&ty.to_le_bytes());
        self.infos.extend_from_slice(&offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.n_tensors.to_le_bytes());
        out.extend_from_slice(&self.n_kv.to_le_bytes());
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.infos);
        let start = out.len().next_multiple_of(self.alignment);
        out.resize(start, 0);
        out.extend_from_slice(&self.data);
        out
    }
}

pub fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}
