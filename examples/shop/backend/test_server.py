import unittest

from server import route


class RouteTest(unittest.TestCase):
    def test_health(self):
        status, body = route("/health")
        self.assertEqual(status, 200)
        self.assertTrue(body["ok"])

    def test_unknown(self):
        self.assertEqual(route("/nope")[0], 404)


if __name__ == "__main__":
    unittest.main()
