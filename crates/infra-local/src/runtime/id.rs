//! Local sandbox ids: `l` followed by 12 random lowercase letters and digits, which is also the name of
//! the sandbox's directory. Anything else is refused before it touches the file system.

use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const PREFIX: char = 'l';
const RANDOM_LEN: usize = 12;

/// A fresh sandbox id.
pub(crate) fn new_sandbox_id() -> String {
    format!("{PREFIX}{}", random_suffix(RANDOM_LEN))
}

/// `len` random lowercase letters and digits.
pub(crate) fn random_suffix(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// Whether `id` has the shape of our ids (so it is a safe single directory name: no `.`, `/`).
pub(crate) fn is_local_id(id: &str) -> bool {
    id.len() == 1 + RANDOM_LEN
        && id.starts_with(PREFIX)
        && id.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_valid() {
        for _ in 0..100 {
            let id = new_sandbox_id();
            assert!(is_local_id(&id), "{id}");
            assert!(domain::SandboxId::try_from(id.as_str()).is_ok());
        }
    }

    #[test]
    fn foreign_ids_are_refused() {
        for bad in [
            "..",
            "l..",
            "labcdefghijk/",
            "Labcdefghijkl",
            "labcdefghijk",
            "",
            "x",
        ] {
            assert!(!is_local_id(bad), "{bad}");
        }
    }
}
