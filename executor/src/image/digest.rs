//! Content digests as the OCI image spec defines them (`algorithm:encoded`),
//! and the hashing adapters that compute them while data streams through.
//!
//! Only the algorithms this program can verify are accepted: `sha256`
//! (the default everywhere), `sha384` and `sha512`. A digest with any other
//! algorithm is rejected when parsed, because a store that cannot verify a
//! blob must not accept it.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// Why a string is not a digest this program accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected algorithm:hex")]
    Syntax(String),
    #[error(
        "unsupported digest algorithm {algorithm:?} in {digest:?}: expected sha256, sha384 or sha512"
    )]
    UnsupportedAlgorithm { algorithm: String, digest: String },
    #[error("invalid digest {digest:?}: {algorithm} needs {expected} lowercase hex characters")]
    Encoded {
        digest: String,
        algorithm: Algorithm,
        expected: usize,
    },
}

/// A digest algorithm this program can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Algorithm {
    #[default]
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    /// The name used in digests and in `blobs/<name>/` directories.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding of a digest of this algorithm.
    #[must_use]
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha384" => Some(Algorithm::Sha384),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified-syntax content digest: an algorithm and its lowercase hex
/// encoding, displayed (and serialized) as `sha256:0123...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Builds a digest from an algorithm and its hex encoding, checking the
    /// encoding's length and alphabet.
    pub fn new(algorithm: Algorithm, hex: &str) -> Result<Self, DigestError> {
        if hex.len() != algorithm.hex_len()
            || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(DigestError::Encoded {
                digest: format!("{algorithm}:{hex}"),
                algorithm,
                expected: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The digest of `data` with `algorithm`.
    #[must_use]
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Self {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(data);
        hasher.finalize()
    }

    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded part, lowercase hex.
    #[must_use]
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

/// The sha256 digest of `data`.
#[must_use]
pub fn sha256_bytes(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    /// Parses `algorithm:encoded` with the OCI grammar
    /// (`algorithm-component ([+._-] algorithm-component)*`, components
    /// `[a-z0-9]+`), then requires a known algorithm and its exact hex form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || DigestError::Syntax(s.to_owned());
        let (algorithm, encoded) = s.split_once(':').ok_or_else(syntax)?;
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        if !algorithm.split(['+', '.', '_', '-']).all(component_ok)
            || encoded.is_empty()
            || !encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
        {
            return Err(syntax());
        }
        let known =
            Algorithm::from_name(algorithm).ok_or_else(|| DigestError::UnsupportedAlgorithm {
                algorithm: algorithm.to_owned(),
                digest: s.to_owned(),
            })?;
        Digest::new(known, encoded)
    }
}

impl TryFrom<&str> for Digest {
    type Error = DigestError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        // A `Digest` is always valid in the OCI grammar, so this cannot fail.
        d.to_string()
            .parse()
            .expect("a validated digest parses as an oci-spec digest")
    }
}

impl From<Digest> for oci_spec::image::Digest {
    fn from(d: Digest) -> Self {
        (&d).into()
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        d.as_ref().parse()
    }
}

/// An incremental hash for one [`Algorithm`].
#[derive(Clone)]
pub struct Hasher(HasherInner);

#[derive(Clone)]
enum HasherInner {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    #[must_use]
    pub fn new(algorithm: Algorithm) -> Self {
        Hasher(match algorithm {
            Algorithm::Sha256 => HasherInner::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => HasherInner::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => HasherInner::Sha512(sha2::Sha512::new()),
        })
    }

    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self.0 {
            HasherInner::Sha256(_) => Algorithm::Sha256,
            HasherInner::Sha384(_) => Algorithm::Sha384,
            HasherInner::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            HasherInner::Sha256(h) => h.update(data),
            HasherInner::Sha384(h) => h.update(data),
            HasherInner::Sha512(h) => h.update(data),
        }
    }

    #[must_use]
    pub fn finalize(self) -> Digest {
        let algorithm = self.algorithm();
        let hex = match self.0 {
            HasherInner::Sha256(h) => hex::encode(h.finalize()),
            HasherInner::Sha384(h) => hex::encode(h.finalize()),
            HasherInner::Sha512(h) => hex::encode(h.finalize()),
        };
        Digest { algorithm, hex }
    }
}

/// A hasher is also a sink: `io::copy(&mut reader, &mut hasher)`.
impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Hasher").field(&self.algorithm()).finish()
    }
}

/// An `io::Write` adapter that writes through to `inner` and hashes and
/// counts exactly the bytes `inner` accepted.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W, algorithm: Algorithm) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(algorithm),
            count: 0,
        }
    }

    pub fn sha256(inner: W) -> Self {
        Self::new(inner, Algorithm::Sha256)
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer; bytes written to it directly are not hashed.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer, the digest of everything written and its length.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finalize(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.hasher.update(buf);
        self.count += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An `io::Read` adapter that hashes and counts the bytes read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(algorithm),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The inner reader, the digest of everything read and its length.
    pub fn finish(self) -> (R, Digest, u64) {
        (self.inner, self.hasher.finalize(), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_empty_input_is_the_well_known_value() {
        assert_eq!(sha256_bytes(b"").to_string(), EMPTY_SHA256);
        assert_eq!(
            sha256_bytes(b"{}").to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn parses_and_displays_known_algorithms() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        for alg in [Algorithm::Sha384, Algorithm::Sha512] {
            let d = Digest::of(alg, b"abc");
            assert_eq!(d.hex().len(), alg.hex_len());
            assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }
        assert_eq!(
            Digest::of(Algorithm::Sha512, b"abc").hex(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn rejects_invalid_digests() {
        let cases = [
            ("", "invalid digest"),
            ("sha256", "invalid digest"),
            ("sha256:", "invalid digest"),
            (":abc", "invalid digest"),
            ("SHA256:abc", "invalid digest"),
            ("sha256+:abc", "invalid digest"),
            ("sha256:ab/c", "invalid digest"),
            (
                "md5:d41d8cd98f00b204e9800998ecf8427e",
                "unsupported digest algorithm",
            ),
            (
                "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdB",
                "unsupported",
            ),
            ("sha256:abc", "needs 64 lowercase hex"),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "needs 64 lowercase hex",
            ),
        ];
        for (input, message) in cases {
            let err = input.parse::<Digest>().unwrap_err();
            assert!(
                err.to_string().contains(message),
                "{input:?}: {err} does not contain {message:?}"
            );
        }
    }

    #[test]
    fn serde_round_trips_as_a_string() {
        let d = sha256_bytes(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }

    #[test]
    fn converts_to_and_from_oci_spec_digests() {
        let d = sha256_bytes(b"x");
        let oci: oci_spec::image::Digest = (&d).into();
        assert_eq!(oci.to_string(), d.to_string());
        assert_eq!(Digest::try_from(&oci).unwrap(), d);
    }

    /// A writer that accepts at most 3 bytes per call, to check that only
    /// accepted bytes are hashed.
    struct Trickle(Vec<u8>);
    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hashing_writer_hashes_what_it_writes_through() {
        let data = b"hello, layer world";
        let mut w = HashingWriter::sha256(Trickle(Vec::new()));
        let n = w.write(data).unwrap();
        assert_eq!(n, 3);
        w.write_all(&data[n..]).unwrap();
        assert_eq!(w.count(), data.len() as u64);
        let (inner, digest, count) = w.finish();
        assert_eq!(inner.0, data);
        assert_eq!(digest, sha256_bytes(data));
        assert_eq!(count, data.len() as u64);
    }

    #[test]
    fn hashing_reader_hashes_what_it_reads() {
        let data = vec![7u8; 100_000];
        let mut r = HashingReader::new(&data[..], Algorithm::Sha384);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let (_, digest, count) = r.finish();
        assert_eq!(digest, Digest::of(Algorithm::Sha384, &data));
        assert_eq!(count, 100_000);
    }
}
