//! Arbitrary bytes as a safetensors shard (lying offsets, absurd shapes, wrong dtypes, a
//! header claiming terabytes): opened, listed, and every tensor read as a weight.
#![no_main]

use auris::checkpoint::WeightStore;
use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = auris::shards::declared_len(data);
    let dir = std::env::temp_dir().join(format!("auris-fuzz-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("model.safetensors");
    std::fs::write(&path, data).expect("temp file");
    let Ok(store) = WeightStore::open(&[path]) else {
        return;
    };
    let vb = store.var_builder(DType::F32, &Device::Cpu);
    for info in store.infos() {
        let _ = info.numel();
        let _ = vb.get_unchecked(&info.name);
    }
});
