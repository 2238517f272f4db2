import TokendCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A node_exporter textfile (`[metrics] textfile`), replaced whole on every write: node_exporter reads the old
/// metrics or the new ones, never a partial file.
///
/// The write goes through ``FileSink``'s replace (temp file beside it, fsync, rename, fsync of the directory), so a
/// symbolic link put in the file's place is replaced, never followed. The directory is the operator's (node_exporter's
/// textfile directory, often shared with other writers) and is not held to a sink directory's ownership rules: the file
/// holds no secret.
public struct MetricsTextfile: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// Replaces the file with `bytes`, mode 0644 (node_exporter runs as another user).
    public func write(_ bytes: [UInt8]) throws(CacheError) {
        let (directoryPath, name) = FileSink.split(path)
        let directory = try openDirectory(directoryPath)
        defer { close(directory) }
        try FileSink.replace(name, in: directory, directoryPath: directoryPath, with: bytes, mode: 0o644)
    }

    /// Removes the file (tokend stops: no metrics that say its tokens are valid are left behind); one that is not
    /// there is no error.
    public func remove() throws(CacheError) {
        let (directoryPath, name) = FileSink.split(path)
        let directory = try openDirectory(directoryPath)
        defer { close(directory) }
        if unlinkat(directory, name, 0) != 0, errno != ENOENT {
            throw CacheError(operation: "unlink", path: path, errno: errno)
        }
    }

    private func openDirectory(_ directoryPath: String) throws(CacheError) -> CInt {
        let directory = open(directoryPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directory >= 0 else { throw CacheError(operation: "open textfile directory", path: directoryPath, errno: errno) }
        return directory
    }
}
