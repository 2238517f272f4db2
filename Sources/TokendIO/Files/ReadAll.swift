#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads an open file to its end, or to `limit` bytes; nil when `read(2)` fails.
///
/// Config files, secrets, cache files and `/proc` entries are all small, and this is cheaper than Foundation's
/// `FileHandle`/`Data` on the paths that run once per instance or per connection.
func readAll(_ fd: CInt, limit: Int, sizeHint: Int = 4096) -> [UInt8]? {
    var bytes = [UInt8](repeating: 0, count: max(1, min(sizeHint, limit)))
    var count = 0
    while count < limit {
        if count == bytes.count { bytes += [UInt8](repeating: 0, count: min(bytes.count, limit - count)) }
        let got = bytes[count...].withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if got < 0, errno == EINTR { continue }
        if got < 0 { return nil }
        if got == 0 { break }
        count += got
    }
    bytes.removeLast(bytes.count - count)
    return bytes
}
