use std::sync::Arc;

use super::*;
use crate::counters::{Counters, RoutingStats};
use bbr_core::Limits;

fn scan_with_cap(cap: u64) -> (Scan, RoutingStats) {
    let counters = Arc::new(Counters::default());
    let scan = Scan::new(
        BodyExtractor::for_content(None, None, Limits::new()),
        ClientHeaders::Strip,
        Reservation::new(counters.clone(), cap),
    );
    (scan, RoutingStats::new(counters))
}

fn scan() -> Scan {
    scan_with_cap(u64::MAX).0
}

fn data_frames(held: &Held) -> Vec<&Bytes> {
    held.frames
        .iter()
        .filter_map(|held| held.frame.data_ref())
        .collect()
}

#[test]
fn the_first_frames_are_held_as_the_same_bytes_in_the_same_boundaries() {
    let mut scan = scan();
    let chunks = [
        Bytes::from_static(b"{\"mo"),
        Bytes::from_static(b"del\":\"m\"}"),
    ];
    for chunk in &chunks {
        let _ = scan.push(Frame::data(chunk.clone()));
    }
    assert_eq!(scan.held_bytes(), 13);
    assert_eq!(scan.held_cost(), 13 + 2 * FRAME_OVERHEAD);
    let held = scan.into_held();
    let frames = data_frames(&held);
    assert_eq!(frames.len(), 2);
    for (data, chunk) in frames.iter().zip(&chunks) {
        assert_eq!(data.as_ptr(), chunk.as_ptr());
        assert_eq!(data.len(), chunk.len());
    }
    assert!(!held.ended);
    assert!(held.validator.is_some());
}

#[test]
fn tiny_frames_past_the_first_are_coalesced_and_large_ones_are_not() {
    let mut scan = scan();
    let mut body = b"{\"messages\":\"".to_vec();
    body.resize(body.len() + 40_000, b'a');
    let mut sent = Vec::new();
    // 16 frames as is, then 1-byte frames, one large frame, more tiny ones.
    for (i, byte) in body.iter().enumerate() {
        let frame = Bytes::copy_from_slice(&[*byte]);
        sent.push(frame.clone());
        assert!(
            matches!(scan.push(Frame::data(frame)), Step::NeedMore),
            "{i}"
        );
    }
    let large = Bytes::from(vec![b'b'; COPY_BELOW]);
    sent.push(large.clone());
    let _ = scan.push(Frame::data(large.clone()));
    for byte in b"\",\"model\":\"m\"}" {
        let frame = Bytes::copy_from_slice(&[*byte]);
        sent.push(frame.clone());
        let _ = scan.push(Frame::data(frame));
    }
    // The tiny frames before the large one fill whole buffers (the last
    // one partly); the large one flushes it; the tail starts a new one.
    let buffers = (body.len() - ZERO_COPY_FRAMES).div_ceil(COALESCE_BYTES) + 1;
    let held = scan.into_held();
    let frames = data_frames(&held);
    assert_eq!(frames.len(), ZERO_COPY_FRAMES + buffers + 1);
    // The same bytes in the same order.
    let joined: Vec<u8> = frames
        .iter()
        .flat_map(|data| data.iter().copied())
        .collect();
    let expected: Vec<u8> = sent.iter().flat_map(|data| data.iter().copied()).collect();
    assert_eq!(joined, expected);
    // Zero copy: the first frames and the large one.
    for (data, chunk) in frames.iter().zip(&sent).take(ZERO_COPY_FRAMES) {
        assert_eq!(data.as_ptr(), chunk.as_ptr());
    }
    assert!(frames.iter().any(|data| data.as_ptr() == large.as_ptr()));
    // Accounted: bytes of the first frames and the large one, whole
    // coalescing buffers, and an overhead per frame.
    let first = ZERO_COPY_FRAMES as u64;
    let expected_cost = first
        + COPY_BELOW as u64
        + (buffers as u64) * COALESCE_BYTES as u64
        + (first + buffers as u64 + 1) * FRAME_OVERHEAD;
    assert_eq!(held.reservation.bytes(), expected_cost);
}

#[test]
fn the_global_cap_refuses_the_frame_that_would_pass_it_and_frees_on_drop() {
    let cap = 1000 + 4 * FRAME_OVERHEAD;
    let (mut scan, stats) = scan_with_cap(cap);
    let spaces = |n: u64| Frame::data(Bytes::from(vec![b' '; n as usize]));
    let _ = scan.push(Frame::data(Bytes::from_static(b"{")));
    assert!(matches!(scan.push(spaces(100)), Step::NeedMore));
    let first = 101 + 2 * FRAME_OVERHEAD;
    assert_eq!(stats.held_bytes(), first);
    // A second request on the same layer: one byte past the cap is refused,
    // exactly at the cap fits.
    let mut other = Scan::new(
        BodyExtractor::for_content(None, None, Limits::new()),
        ClientHeaders::Strip,
        Reservation::new(scan.reservation.counters().clone(), cap),
    );
    let room = cap - first - FRAME_OVERHEAD;
    assert!(matches!(
        other.push(spaces(room + 1)),
        Step::Failed(Refusal::Overloaded)
    ));
    assert_eq!((stats.overloaded(), stats.held_bytes()), (1, first));
    assert!(matches!(other.push(spaces(room)), Step::NeedMore));
    assert_eq!(stats.held_bytes(), cap);
    assert!(matches!(
        scan.push(spaces(1)),
        Step::Failed(Refusal::Overloaded)
    ));
    assert_eq!(stats.overloaded(), 2);
    drop(other);
    assert_eq!(stats.held_bytes(), first);
    drop(scan);
    assert_eq!(stats.held_bytes(), 0);
}

#[test]
fn a_body_without_bytes_is_empty_not_an_error() {
    let mut scan = scan();
    assert!(matches!(
        scan.push(Frame::data(Bytes::new())),
        Step::NeedMore
    ));
    assert!(matches!(scan.end(), Step::Decided(Decision::Empty)));
    assert_eq!(scan.held_frames(), 0);
    let held = scan.into_held();
    assert!(held.ended);
    assert!(held.validator.is_none());
}

fn spoofed_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("1"));
    trailers.insert(
        "x_gateway_model_name",
        http::HeaderValue::from_static("spoofed"),
    );
    trailers
}

#[test]
fn trailers_end_the_scan_and_are_held_without_routing_headers() {
    let mut scan = scan();
    let _ = scan.push(Frame::data(Bytes::from_static(b"{\"model\":\"m\"")));
    let _ = scan.push(Frame::data(Bytes::from_static(b"}")));
    let _ = scan.push(Frame::trailers(spoofed_trailers()));
    let held = scan.into_held();
    assert!(held.ended);
    let trailers = held
        .frames
        .back()
        .and_then(|held| held.frame.trailers_ref())
        .unwrap();
    assert_eq!(trailers.len(), 1);
    assert_eq!(trailers["x-checksum"], "1");
}

#[test]
fn routing_headers_in_trailers_are_refused_under_reject() {
    let counters = Arc::new(Counters::default());
    let mut scan = Scan::new(
        BodyExtractor::for_content(None, None, Limits::new()),
        ClientHeaders::Reject,
        Reservation::new(counters, u64::MAX),
    );
    let _ = scan.push(Frame::data(Bytes::from_static(b"{\"x\":1")));
    assert!(matches!(
        scan.push(Frame::trailers(spoofed_trailers())),
        Step::Failed(Refusal::RoutingHeader(bbr_core::contract::MODEL_HEADER))
    ));
}

#[cfg(feature = "gzip")]
#[test]
fn a_compressed_body_reserves_its_decoder_at_the_first_byte_until_it_is_decoded() {
    // `{"model":"m"}` gzipped.
    let gzipped = Bytes::from_static(&[
        0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3, 0xab, 0x56, 0xca, 0xcd, 0x4f, 0x49, 0xcd, 0x51, 0xb2,
        0x52, 0xca, 0x55, 0xaa, 0x05, 0x00, 0x9b, 0x6c, 0xba, 0xaa, 0x0d, 0x00, 0x00, 0x00,
    ]);
    let decoder = 64 << 10;
    for (split_at, ended) in [(gzipped.len(), true), (12, false)] {
        let counters = Arc::new(Counters::default());
        let stats = RoutingStats::new(counters.clone());
        let mut scan = Scan::new(
            BodyExtractor::for_content(None, Some(b"gzip"), Limits::new()),
            ClientHeaders::Strip,
            Reservation::new(counters, u64::MAX),
        );
        assert_eq!(stats.held_bytes(), 0, "nothing before the first byte");
        let step = scan.push(Frame::data(gzipped.slice(..split_at)));
        let frame = split_at as u64 + FRAME_OVERHEAD;
        assert_eq!(stats.held_bytes(), decoder + frame);
        if ended {
            assert!(matches!(step, Step::Decided(Decision::Found(_))));
            assert!(matches!(scan.end(), Step::Decided(Decision::Found(_))));
            // Nothing left to decode: only the frame stays held.
            let held = scan.into_held();
            assert_eq!((stats.held_bytes(), held.decoder_cost), (frame, 0));
        } else {
            // Undecided: the validator keeps decoding after the decision.
            assert!(matches!(step, Step::NeedMore));
            let held = scan.into_held();
            assert_eq!(held.decoder_cost, decoder);
            assert!(held.validator.is_some());
        }
    }
}

fn spooling_scan(threshold: u64, disk_cap: u64) -> (Scan, RoutingStats) {
    let (scan, stats) = scan_with_cap(u64::MAX);
    let disk = Reservation::disk(scan.reservation.counters().clone(), disk_cap);
    let spool = Spool::new(bbr_core::spool::SpoolConfig::new().with_memory_threshold(threshold));
    (scan.with_spool(spool, disk), stats)
}

/// Runs the scan's pending spool writes in place (the layer runs them on
/// the blocking pool).
fn write_all(scan: &mut Scan) {
    while let Some(job) = scan.next_write() {
        scan.write_done(Some(job.run())).unwrap();
    }
}

#[test]
fn past_the_threshold_frames_go_to_the_spool_and_come_back_between_memory_and_the_rest() {
    let (mut scan, stats) = spooling_scan(8, u64::MAX);
    let first = Bytes::from_static(br#"{"a":1,"#);
    assert!(matches!(
        scan.push(Frame::data(first.clone())),
        Step::NeedMore
    ));
    assert_eq!(scan.spooled_bytes(), 0);
    for piece in [&br#""b":"#[..], br#""xyz","#] {
        assert!(matches!(
            scan.push(Frame::data(Bytes::from_static(piece))),
            Step::NeedMore
        ));
    }
    // Two frames spooled, written; the deciding frame waits in memory.
    write_all(&mut scan);
    assert!(matches!(
        scan.push(Frame::data(Bytes::from_static(br#""model":"m"}"#))),
        Step::Decided(Decision::Found(_))
    ));
    assert_eq!(scan.spooled_bytes(), 4 + 6 + 12);
    assert_eq!(stats.spooled_requests(), 1);
    let mut held = scan.into_held();
    // The unwritten frame no longer counts on disk.
    assert_eq!(stats.spooled_bytes(), 10);
    let spool = held.spool.as_mut().expect("spooled");
    assert_eq!(spool.at, 1);
    assert_eq!(
        &spool.file.read_chunk(64).unwrap().unwrap()[..],
        br#""b":"xyz","#
    );
    let frames = data_frames(&held);
    assert_eq!(frames.len(), 2);
    // Held in memory as it came.
    assert_eq!(frames[0].as_ptr(), first.as_ptr());
    assert_eq!(&frames[1][..], br#""model":"m"}"#);
}

#[test]
fn trailers_read_while_spooling_come_after_the_spooled_bytes() {
    let (mut scan, _) = spooling_scan(0, u64::MAX);
    scan.push(Frame::data(Bytes::from_static(br#"{"model":"#)));
    write_all(&mut scan);
    scan.push(Frame::data(Bytes::from_static(br#""m""#)));
    assert!(matches!(
        scan.push(Frame::trailers(http::HeaderMap::new())),
        Step::Failed(_)
    ));
    let (mut scan, _) = spooling_scan(0, u64::MAX);
    scan.push(Frame::data(Bytes::from_static(br#"{"x":1"#)));
    write_all(&mut scan);
    scan.push(Frame::data(Bytes::from_static(br#"}"#)));
    assert!(matches!(
        scan.push(Frame::trailers(http::HeaderMap::new())),
        Step::Decided(Decision::Absent)
    ));
    let held = scan.into_held();
    assert_eq!(held.spool.as_ref().map(|spool| spool.at), Some(0));
    assert_eq!(held.frames.len(), 2);
    assert!(held.frames[0].frame.is_data());
    assert!(held.frames[1].frame.is_trailers());
}

#[test]
fn the_disk_cap_refuses_the_frame_that_would_pass_it() {
    let (mut scan, stats) = spooling_scan(2, 5);
    scan.push(Frame::data(Bytes::from_static(b"{ ")));
    assert!(matches!(
        scan.push(Frame::data(Bytes::from_static(b"     "))),
        Step::NeedMore
    ));
    assert_eq!(stats.spooled_bytes(), 5);
    assert!(matches!(
        scan.push(Frame::data(Bytes::from_static(b" "))),
        Step::Failed(Refusal::Overloaded)
    ));
    assert_eq!(stats.overloaded(), 1);
    drop(scan);
    assert_eq!((stats.spooled_bytes(), stats.held_bytes()), (0, 0));
}
