import Foundation

/// The 200 answers already made from one token, so that callers asking many times a second share one body instead of
/// each rendering it: an answer stays right for as long as its format and `expires_in` do (under a second for JSON; the
/// token's whole life for `raw` and `header`).
///
/// Belongs to one instance's one token (a new token, a new `TokenAnswers`); whether the caller may read the token and
/// whether it is still servable is decided before.
public struct TokenAnswers: Sendable {
    private var made: [(format: TokenFormat, expiresIn: Int, application: TokenApplication?, response: APIResponse)] = []

    public init() {}

    /// What ``APIRouter/tokenResponse(name:token:format:now:)`` answers, from the last one made when it is the same.
    ///
    /// `application` matters to the `header` and `apply` formats only (nil: the default).
    public mutating func answer(
        name: String,
        token: IssuedToken,
        format: TokenFormat,
        now: Date,
        router: APIRouter,
        application: TokenApplication? = nil
    ) -> APIResponse {
        let expiresIn = format.changesEverySecond ? APIRouter.expiresIn(token, now: now) : 0
        let application = format.usesApplication ? application : nil
        for entry in made where entry.format == format && entry.expiresIn == expiresIn && entry.application == application {
            return entry.response
        }
        let response = router.tokenResponse(name: name, token: token, format: format, now: now, application: application ?? .standard)
        if let index = made.firstIndex(where: { $0.format == format }) {
            made[index] = (format, expiresIn, application, response)
        } else {
            made.append((format, expiresIn, application, response))
        }
        return response
    }
}
