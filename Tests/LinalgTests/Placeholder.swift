import XCTest
final class PlaceholderLinalgTests: XCTestCase { func testBuilds() {} }
