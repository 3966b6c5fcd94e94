//! Gathering a batch by index from the data held on the backend.

use super::{elems, elems_mut, Cpu, CpuFloat, PAR_ELEMS};
use crate::backend::PixelMap;
use crate::{Element, View, ViewMut};
use rayon::prelude::*;

/// `out[r] = src[rows[r]]`, each row's columns mapped by `map`.
pub(crate) fn gather_rows<T: CpuFloat, E: Element>(
    src: View<'_, Cpu<T>, E>,
    rows: View<'_, Cpu<T>, u32>,
    map: PixelMap<'_, Cpu<T>>,
    out: ViewMut<'_, Cpu<T>, E>,
) {
    let cols = src.cols;
    assert_eq!(
        out.shape(),
        (rows.len(), cols),
        "gather_rows: output {:?} for {} rows of {cols}",
        out.shape(),
        rows.len()
    );
    if cols == 0 {
        return;
    }
    let (src_s, idx) = (elems(&src), elems(&rows));
    let n = src.rows;
    let maps = match map {
        PixelMap::Identity => None,
        PixelMap::Shared(m) => {
            assert_eq!(m.len(), cols, "gather_rows: a map of {} for rows of {cols}", m.len());
            Some((None, elems(&m)))
        }
        PixelMap::PerRow { ids, maps } => {
            assert_eq!(ids.len(), rows.len(), "gather_rows: {} map ids for {} rows", ids.len(), rows.len());
            assert_eq!(maps.cols, cols, "gather_rows: maps of {} for rows of {cols}", maps.cols);
            Some((Some(elems(&ids)), elems(&maps)))
        }
    };
    let one = |r: usize, orow: &mut [E]| {
        let i = idx[r] as usize;
        assert!(i < n, "gather_rows: row {i} of {n}");
        let row = &src_s[i * cols..(i + 1) * cols];
        match maps {
            None => orow.copy_from_slice(row),
            Some((ids, m)) => {
                let m = match ids {
                    None => m,
                    Some(ids) => &m[ids[r] as usize * cols..(ids[r] as usize + 1) * cols],
                };
                for (o, &j) in orow.iter_mut().zip(m) {
                    *o = row[j as usize];
                }
            }
        }
    };
    let o = elems_mut(out);
    if o.len() >= PAR_ELEMS {
        o.par_chunks_mut(cols).enumerate().for_each(|(r, orow)| one(r, orow));
    } else {
        o.chunks_mut(cols).enumerate().for_each(|(r, orow)| one(r, orow));
    }
}
