// The Node backend as its README sets it up: Express, express.json(), the navai routes.
import express from "express";
import { registerNavaiExpressRoutes } from "@navai/voice-backend";

const app = express();
app.use(express.json());
registerNavaiExpressRoutes(app);
const server = app.listen(Number(process.env.PORT), "127.0.0.1", () => {
  console.log(`PORT ${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
