//! `.npy` files (the arrays numpy and PyTorch users hand around): the inputs `predict` reads,
//! and the arrays `predict` and the bench's split export write.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use kd::core::atomic::AtomicFile;
use npyz::WriterBuilder;

/// Reads a float32 `.npy` of shape `[n, c, h, w]` matching the model's input.
pub fn read_npy_inputs(path: &Path, shape: [usize; 3]) -> Result<(Vec<f32>, usize)> {
    kd::core::files::check_regular(path)?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).with_context(|| format!("{}: not a readable .npy file", path.display()))?;
    let dims: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let dtype = npy.dtype();
    let float32 = matches!(&dtype, npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4);
    ensure!(float32, "{}: dtype {} where float32 is needed (numpy: x.astype(np.float32))", path.display(), dtype.descr());
    ensure!(npy.order() == npyz::Order::C, "{}: Fortran order; save a C-ordered array (np.ascontiguousarray)", path.display());
    let [c, h, w] = shape;
    ensure!(
        dims.len() == 4 && dims[1..] == [c, h, w],
        "{}: shape {dims:?}; the model takes [N, {c}, {h}, {w}] (float32, NCHW)",
        path.display()
    );
    let n = dims[0];
    let values: Vec<f32> = npy.into_vec::<f32>().with_context(|| format!("{}: reading the values", path.display()))?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let per = c * h * w;
        bail!("{}: sample {} holds a non-finite value ({}) at flat index {}", path.display(), i / per, values[i], i % per);
    }
    Ok((values, n))
}

/// Writes `values` as a C-ordered `.npy` array of `shape` (f32, i64, ...).
pub fn write_npy<T: npyz::Serialize + npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], values: &[T]) -> Result<()> {
    ensure!(shape.iter().product::<usize>() == values.len(), "{}: {} values for shape {shape:?}", path.display(), values.len());
    // Written atomically: a full disk or a kill leaves the previous file, never half of one.
    let mut file = AtomicFile::create(path)?;
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(&dims)
        .writer(&mut file)
        .begin_nd()
        .with_context(|| format!("writing {}", path.display()))?;
    writer.extend(values.iter().copied()).with_context(|| format!("writing {}", path.display()))?;
    writer.finish().with_context(|| format!("writing {}", path.display()))?;
    file.commit()?;
    Ok(())
}
