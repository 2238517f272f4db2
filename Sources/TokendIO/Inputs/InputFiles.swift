import Dispatch
import Foundation
import NIOConcurrencyHelpers
import TokendCore

#if canImport(Glibc)
import Glibc
#endif

/// The files instance variables take their values from (`{ file = … }`, `{ credential = … }`, SPEC §11), read again
/// before every fetch and watched for changes while the daemon runs.
///
/// The real one is ``InputFiles`` (inotify); tests use an in-memory twin.
public protocol InputSource: Sendable {
    /// The path a file or credential source reads; nil for a literal or an instance.
    func path(of source: VariableSource) -> String?

    /// The source's value now: the file's text with one trailing newline removed; the failure names the file and
    /// why, never its contents.
    func read(_ source: VariableSource) -> Result<String, ConfigLoader.SecretReadError>

    /// Watches `paths` (replacing the paths watched before): `changed` is called, on any thread, with each watched
    /// path whose file may have changed (written, replaced by a rename, deleted, its directory's symlink swapped).
    ///
    /// Returns the paths it cannot watch (no inotify, a directory that does not exist, the watch limit reached):
    /// the daemon polls those.
    @discardableResult
    func watch(_ paths: Set<String>, changed: @escaping @Sendable (String) -> Void) -> Set<String>

    /// Stops watching.
    func stop()
}

/// Reads input files like the config loader reads secrets, and watches their directories with inotify.
///
/// Directories rather than files are watched: a file replaced by a rename (an editor, `mv`, Kubernetes' projected
/// volumes, which swap a `..data` symlink beside the file) is a new inode that a watch on the old file would never
/// see. Any event in a watched directory reports every watched path in it; the daemon then reads those files and
/// compares, so a spurious report costs one small read.
/// Hand-written on Glibc's `inotify_*` calls: no library in the package set wraps inotify.
public final class InputFiles: InputSource, @unchecked Sendable {
    public let credentialsDirectory: String?
    private let queue = DispatchQueue(label: "tokend.inputs")
    // Guarded by `queue`.
    private var descriptor: Int32 = -1
    private var source: (any DispatchSourceRead)?
    private var directories: [Int32: String] = [:]
    private var pathsByDirectory: [String: Set<String>] = [:]
    private var changed: (@Sendable (String) -> Void)?

    public init(credentialsDirectory: String?) {
        self.credentialsDirectory = credentialsDirectory
    }

    public func path(of source: VariableSource) -> String? {
        switch source {
        case .file(let path): return path
        case .credential(let name):
            guard let directory = credentialsDirectory, !directory.isEmpty else { return nil }
            return ConfigDirectory.join(directory, name)
        case .literal, .instance: return nil
        }
    }

    public func read(_ source: VariableSource) -> Result<String, ConfigLoader.SecretReadError> {
        ConfigDirectory.readSecret(source, credentialsDirectory: credentialsDirectory).map {
            ConfigLoader.trimmingOneNewline($0.text)
        }
    }

    @discardableResult
    public func watch(_ paths: Set<String>, changed: @escaping @Sendable (String) -> Void) -> Set<String> {
        queue.sync {
            self.changed = changed
            var wanted: [String: Set<String>] = [:]
            for path in paths {
                wanted[(path as NSString).deletingLastPathComponent, default: []].insert(path)
            }
            if wanted.isEmpty && descriptor < 0 { return [] }
            if descriptor < 0 { open() }
            guard descriptor >= 0 else { return paths }
            for (watch, directory) in directories where wanted[directory] == nil {
                inotify_rm_watch(descriptor, watch)
                directories[watch] = nil
            }
            let watching = Set(directories.values)
            let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB | IN_MODIFY)
            var unwatched: Set<String> = []
            for directory in wanted.keys where !watching.contains(directory) {
                let watch = inotify_add_watch(descriptor, directory, mask)
                if watch >= 0 {
                    directories[watch] = directory
                } else {
                    unwatched.formUnion(wanted[directory] ?? [])
                }
            }
            pathsByDirectory = wanted
            return unwatched
        }
    }

    public func stop() {
        queue.sync {
            source?.cancel()
            source = nil
            descriptor = -1
            directories = [:]
            pathsByDirectory = [:]
        }
    }

    /// Opens the inotify descriptor and reads its events on `queue`.
    private func open() {
        descriptor = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard descriptor >= 0 else { return }
        let fd = descriptor
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { [weak self] in self?.drain() }
        source.setCancelHandler { Glibc.close(fd) }
        source.resume()
        self.source = source
    }

    /// Reads every pending event and reports the watched paths of the directories they happened in.
    private func drain() {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var touched: Set<String> = []
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            var offset = 0
            let headerSize = MemoryLayout<inotify_event>.size
            while offset + headerSize <= count {
                let (watch, nameLength) = buffer.withUnsafeBytes { bytes in
                    let event = bytes.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                    return (event.wd, Int(event.len))
                }
                if let directory = directories[watch] { touched.insert(directory) }
                offset += headerSize + nameLength
            }
        }
        guard let changed else { return }
        for directory in touched.sorted() {
            for path in (pathsByDirectory[directory] ?? []).sorted() { changed(path) }
        }
    }
}
