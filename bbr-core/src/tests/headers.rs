//! Which header fields choose the extractor ([`BodyExtractor::for_headers`]):
//! the rule both adapters (tower's `HeaderMap`, Envoy's header list) rely on,
//! and the sticky error every extractor shares.

use bytes::Bytes;

use crate::encoding::{Coding, ContentEncoding, NotDecoded};
use crate::multipart::MultipartExtractor;
use crate::{BodyExtractor, BodyKind, ErrorKind, Limits, ModelExtractor, Outcome, Progress};

const FORM: &str = "multipart/form-data; boundary=b";
const FORM_BODY: &[u8] =
    b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n";

fn none() -> [&'static [u8]; 0] {
    []
}

#[test]
fn the_first_content_type_counts() {
    let limits = Limits::new();
    let kind = |types: &[&str]| BodyExtractor::for_headers(types, none(), limits).kind();
    assert_eq!(kind(&[]), BodyKind::Json);
    assert_eq!(kind(&[FORM]), BodyKind::Multipart);
    assert_eq!(kind(&[FORM, "application/json"]), BodyKind::Multipart);
    assert_eq!(kind(&["application/json", FORM]), BodyKind::Json);
    assert_eq!(kind(&["", FORM]), BodyKind::Json);
    // And the first is really what is read: its boundary frames the form.
    let mut body =
        BodyExtractor::for_headers([FORM, "multipart/form-data; boundary=c"], none(), limits);
    body.feed(&Bytes::from_static(FORM_BODY)).unwrap();
    assert_eq!(
        body.finish().unwrap().model().unwrap().as_str(),
        "whisper-1"
    );
}

/// Every way of splitting the same list across fields gives what the
/// joined list gives, for lists of one to three codings, known or not.
#[test]
fn content_encoding_fields_are_one_list() {
    let tokens = [
        "gzip", "br", "zstd", "deflate", "identity", "", "compress", " X-GZIP ",
    ];
    let mut checked = 0;
    for a in tokens {
        for b in tokens {
            for c in tokens {
                let list = [a, b, c];
                let joined = list.join(",");
                let expected = ContentEncoding::parse(joined.as_bytes());
                // Split after the first, after the second, or three fields.
                for fields in [
                    vec![joined.clone()],
                    vec![a.to_owned(), format!("{b},{c}")],
                    vec![format!("{a},{b}"), c.to_owned()],
                    vec![a.to_owned(), b.to_owned(), c.to_owned()],
                ] {
                    assert_eq!(
                        ContentEncoding::parse_fields(&fields),
                        expected,
                        "{fields:?}"
                    );
                    let body = BodyExtractor::for_headers(none(), &fields, Limits::new());
                    let joined_body =
                        BodyExtractor::for_content(None, Some(joined.as_bytes()), Limits::new());
                    assert_eq!(body.kind(), joined_body.kind(), "{fields:?}");
                    assert_eq!(body.encoding(), joined_body.encoding(), "{fields:?}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 8 * 8 * 8 * 4);
}

#[test]
fn content_encoding_without_fields_is_identity() {
    let body = BodyExtractor::for_headers(none(), none(), Limits::new());
    assert!(body.encoding().is_identity());
    assert_eq!(body.kind(), BodyKind::Json);
    for empty in [&[""][..], &["identity"], &["", " , "]] {
        let body = BodyExtractor::for_headers(none(), empty, Limits::new());
        assert!(body.encoding().is_identity(), "{empty:?}");
    }
}

#[test]
fn content_encoding_limits_at_and_past_two_codings() {
    let at = ContentEncoding::parse_fields(["deflate", "deflate"]);
    let past = ContentEncoding::parse_fields(["deflate", "deflate", "deflate"]);
    assert_eq!(past, Err(NotDecoded::TooMany));
    if cfg!(feature = "flate2") {
        assert_eq!(
            at.unwrap().codings(),
            &[Coding::Deflate, Coding::Deflate][..]
        );
    } else {
        assert_eq!(at, Err(NotDecoded::NotBuilt(Coding::Deflate)));
    }
    // An unknown coding in a later field is still unknown, not skipped.
    assert_eq!(
        ContentEncoding::parse_fields(["identity", "snappy"]),
        Err(NotDecoded::Unknown)
    );
}

#[test]
fn header_values_as_str_bytes_and_owned() {
    let limits = Limits::new();
    let owned = vec![FORM.to_owned()];
    let bytes: Vec<Vec<u8>> = vec![FORM.as_bytes().to_vec()];
    assert_eq!(
        BodyExtractor::for_headers(&owned, none(), limits).kind(),
        BodyKind::Multipart
    );
    assert_eq!(
        BodyExtractor::for_headers(&bytes, none(), limits).kind(),
        BodyKind::Multipart
    );
    assert_eq!(
        BodyExtractor::for_headers(Some(FORM), None::<&str>, limits).kind(),
        BodyKind::Multipart
    );
}

/// The first error is every later answer, in each extractor (one
/// implementation, `bounded::StickyError`).
#[test]
fn errors_are_sticky_in_every_extractor() {
    let limits = Limits::new();
    let chunk = Bytes::from_static(b"{}");
    let mut json = ModelExtractor::new(limits);
    let err = json.feed(&Bytes::from_static(b"[")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAnObject);
    assert_eq!(json.feed(&chunk), Err(err.clone()));
    assert_eq!(json.finish(), Err(err.clone()));

    let mut form = MultipartExtractor::from_content_type(FORM.as_bytes(), limits);
    let err = form.feed(&Bytes::from_static(b"--b\r\nX\r\n")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMultipart);
    assert_eq!(form.feed(&Bytes::from_static(FORM_BODY)), Err(err.clone()));
    assert_eq!(form.finish(), Err(err));

    // A truncated body: the finish error is sticky too.
    let mut json = ModelExtractor::new(limits);
    assert!(matches!(
        json.feed(&Bytes::from_static(b"{\"model\":\"m\"")),
        Ok(Progress::Found(_))
    ));
    let end = json.finish().unwrap_err();
    assert_eq!((end.kind(), end.offset()), (ErrorKind::UnexpectedEnd, 12));
    assert_eq!(json.feed(&Bytes::from_static(b"}")), Err(end.clone()));
    assert_eq!(json.finish(), Err(end));

    let mut body = BodyExtractor::for_headers(none(), none(), limits);
    let err = body.feed(&Bytes::from_static(b"x")).unwrap_err();
    assert_eq!(body.feed(&chunk), Err(err.clone()));
    assert_eq!(body.finish(), Err(err));
    let mut fine = BodyExtractor::for_headers(none(), none(), limits);
    assert_eq!(fine.feed(&chunk), Ok(Progress::Absent));
    assert_eq!(fine.finish(), Ok(Outcome::Absent));
}
