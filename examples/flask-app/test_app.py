"""The app's tests, run by the pipeline's test job inside the built image."""

import unittest

from app import app


class AppTest(unittest.TestCase):
    def test_index_greets(self):
        response = app.test_client().get("/")
        self.assertEqual(response.status_code, 200)
        self.assertIn(b"built by executor", response.data)

    def test_healthz(self):
        response = app.test_client().get("/healthz")
        self.assertEqual(response.get_json(), {"status": "ok"})


if __name__ == "__main__":
    unittest.main()
