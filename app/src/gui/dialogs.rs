//! Native file dialogs (rfd: the desktop portal on Linux, with zenity as its fallback; the
//! system dialogs on Windows and macOS) for opening images and model folders and for saving.
//! Where none can open — no D-Bus session bus for the portal and no zenity, as under Xvfb or
//! over SSH — the buttons say so and the path fields (and drag-and-drop) stay the way in. The
//! browser has none ([`super::platform::HAS_DIALOGS`]): files are dropped on the page there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Why no native dialog can open on this machine, if none can. `env` reads an environment
/// variable (the process's own in the app; a fake one in the tests).
pub fn unavailable_with(env: impl Fn(&str) -> Option<OsString>) -> Option<&'static str> {
    if !super::platform::HAS_DIALOGS {
        return Some("no file dialogs in the browser: drop the file or folder on the page");
    }
    if !cfg!(target_os = "linux") {
        return None;
    }
    let bus = env("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty())
        || env("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists());
    let zenity =
        env("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("zenity").is_file()));
    (!bus && !zenity).then_some(
        "no file dialog here (no desktop portal on a D-Bus session, no zenity): type the path or \
         drop the file on the window",
    )
}

/// [`unavailable_with`] for this process.
pub fn unavailable() -> Option<&'static str> {
    unavailable_with(|k| std::env::var_os(k))
}

/// What a dialog gave: a path, nothing (cancelled), or why none could open.
pub enum Picked {
    Path(PathBuf),
    Cancelled,
    Unavailable(&'static str),
}

impl Picked {
    /// The path picked, if any; where no dialog could open, says why in `message`.
    pub fn path(self, message: &mut Option<String>) -> Option<PathBuf> {
        match self {
            Picked::Path(p) => Some(p),
            Picked::Cancelled => None,
            Picked::Unavailable(why) => {
                *message = Some(why.to_owned());
                None
            }
        }
    }
}

fn run(f: impl FnOnce() -> Option<PathBuf>) -> Picked {
    if let Some(why) = unavailable() {
        return Picked::Unavailable(why);
    }
    f().map_or(Picked::Cancelled, Picked::Path)
}

/// The browser's stand-in for rfd: never asked ([`unavailable`] answers first).
#[cfg(target_arch = "wasm32")]
mod rfd {
    pub struct FileDialog;

    impl FileDialog {
        pub fn new() -> Self {
            Self
        }
        pub fn set_title(self, _: &str) -> Self {
            self
        }
        pub fn set_file_name(self, _: &str) -> Self {
            self
        }
        pub fn add_filter(self, _: &str, _: &[&str]) -> Self {
            self
        }
        pub fn pick_file(self) -> Option<std::path::PathBuf> {
            None
        }
        pub fn pick_folder(self) -> Option<std::path::PathBuf> {
            None
        }
        pub fn save_file(self) -> Option<std::path::PathBuf> {
            None
        }
    }
}

/// An image to open (PNG, JPEG, WebP, BMP, GIF).
pub fn open_image() -> Picked {
    run(|| {
        rfd::FileDialog::new()
            .set_title("Open an image")
            .add_filter("images", &["png", "jpg", "jpeg", "webp", "bmp", "gif"])
            .pick_file()
    })
}

/// A model folder (a diffusers pipeline folder, or a folder of MaskGIT checkpoints).
pub fn open_model_folder() -> Picked {
    run(|| {
        rfd::FileDialog::new()
            .set_title("Open a model folder")
            .pick_folder()
    })
}

/// Where to save a file with extension `ext`, suggesting `name`.
pub fn save_as(name: &str, ext: &str) -> Picked {
    run(|| {
        rfd::FileDialog::new()
            .set_title("Save as")
            .set_file_name(name)
            .add_filter(ext, &[ext])
            .save_file()
    })
}

#[cfg(test)]
mod tests {
    use super::unavailable_with;
    use std::ffi::OsString;

    #[test]
    fn no_bus_and_no_zenity_means_no_dialog() {
        let none = |_: &str| None::<OsString>;
        assert!(unavailable_with(none).is_some());
        let bus = |k: &str| (k == "DBUS_SESSION_BUS_ADDRESS").then(|| "unix:path=/x".into());
        assert!(unavailable_with(bus).is_none());
        let empty_bus = |k: &str| (k == "DBUS_SESSION_BUS_ADDRESS").then(OsString::new);
        assert!(unavailable_with(empty_bus).is_some());
        // zenity on PATH is enough (rfd falls back to it when the portal fails).
        let dir = std::env::temp_dir().join(format!("tessera-zenity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("zenity"), "#!/bin/sh\n").expect("write");
        let path = dir.clone().into_os_string();
        let with_zenity = move |k: &str| (k == "PATH").then(|| path.clone());
        assert!(unavailable_with(with_zenity).is_none());
    }
}
