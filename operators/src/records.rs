//! The records the dataflow stores for serving, encoded natively in the exact bytes of
//! `state/records.py` (the schema's owner): an 8-byte big-endian version header, then the
//! msgspec `array_like` msgpack of the record. `tests/state/test_native_records.py` decodes
//! these with `state.records` and compares them with msgspec's own encoding, byte for byte.

use rmp::encode;

/// What serving reads of a user (`state.records.UserRecord`), fields in schema order.
pub struct UserRecordFields<'a> {
    pub version: u64,
    pub event_ts_s: f64,
    pub written_at_s: f64,
    pub vector: &'a [f32],
    pub recent: &'a [&'a str],
    pub seen: &'a [&'a str],
    /// (event type, count) with count > 0, in the order to write them.
    pub counts: &'a [(&'a str, u32)],
    pub session_no: u32,
    pub session_start_ts_s: f64,
    pub session_event_count: u32,
    pub session_items: &'a [&'a str],
    pub segment: &'a str,
    pub duplicates: u64,
    pub dedup_ids: u64,
    pub purchased: &'a [&'a str],
    pub events: u64,
}

const USER_RECORD_FIELDS: u32 = 16;

fn strs(out: &mut Vec<u8>, items: &[&str]) {
    encode::write_array_len(out, items.len() as u32).expect("Vec write");
    for s in items {
        encode::write_str(out, s).expect("Vec write");
    }
}

/// `state.records.encode_user(record)`, natively.
pub fn encode_user(r: &UserRecordFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 4 * r.vector.len() + 12 * r.seen.len());
    out.extend_from_slice(&r.version.to_be_bytes());
    encode::write_array_len(&mut out, USER_RECORD_FIELDS).expect("Vec write");
    encode::write_uint(&mut out, r.version).expect("Vec write");
    encode::write_f64(&mut out, r.event_ts_s).expect("Vec write");
    encode::write_f64(&mut out, r.written_at_s).expect("Vec write");
    encode::write_bin_len(&mut out, (4 * r.vector.len()) as u32).expect("Vec write");
    for x in r.vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    strs(&mut out, r.recent);
    strs(&mut out, r.seen);
    encode::write_map_len(&mut out, r.counts.len() as u32).expect("Vec write");
    for (name, count) in r.counts {
        encode::write_str(&mut out, name).expect("Vec write");
        encode::write_uint(&mut out, u64::from(*count)).expect("Vec write");
    }
    encode::write_uint(&mut out, u64::from(r.session_no)).expect("Vec write");
    encode::write_f64(&mut out, r.session_start_ts_s).expect("Vec write");
    encode::write_uint(&mut out, u64::from(r.session_event_count)).expect("Vec write");
    strs(&mut out, r.session_items);
    encode::write_str(&mut out, r.segment).expect("Vec write");
    encode::write_uint(&mut out, r.duplicates).expect("Vec write");
    encode::write_uint(&mut out, r.dedup_ids).expect("Vec write");
    strs(&mut out, r.purchased);
    encode::write_uint(&mut out, r.events).expect("Vec write");
    out
}

/// `state.records.encode_neighbours(NeighboursRecord(version, item_ids, scores))`.
pub fn encode_neighbours(version: u64, items: &[(&str, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 16 * items.len());
    out.extend_from_slice(&version.to_be_bytes());
    encode::write_array_len(&mut out, 3).expect("Vec write");
    encode::write_uint(&mut out, version).expect("Vec write");
    encode::write_array_len(&mut out, items.len() as u32).expect("Vec write");
    for (id, _) in items {
        encode::write_str(&mut out, id).expect("Vec write");
    }
    encode::write_array_len(&mut out, items.len() as u32).expect("Vec write");
    for (_, score) in items {
        encode::write_f64(&mut out, *score).expect("Vec write");
    }
    out
}

/// float32 little-endian bytes of a vector (`state.records.vector_to_bytes`).
pub fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_record_bytes() {
        // msgspec: encode_neighbours(NeighboursRecord(3, ["x"], [1.25]))
        let expected = "0000000000000003930391a17891cb3ff4000000000000";
        let got: String =
            encode_neighbours(3, &[("x", 1.25)]).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, expected);
    }
}
