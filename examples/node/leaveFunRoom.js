// The first example of Sails' sails.sockets.leave() page: in a controller
// action, unsubscribe the requesting socket from the specified room. It runs
// behind a gateway started with --upstream-url pointing at this app; a
// socket's request (io.socket.post('/leaveFunRoom', {roomName: 'fun'}) with
// sails.io.js, or a native `request` frame) reaches it with X-Socket-Id.

/** leaveFunRoom is the action of the seed page, for the given sails. */
export function leaveFunRoom(sails) {
  return function leaveFunRoom(req, res) {
    if (req.param("roomName") === undefined) {
      return res.badRequest("`roomName` is required.");
    }

    if (!req.isSocket) {
      return res.badRequest("This endpoints only supports socket requests.");
    }

    var roomName = req.param("roomName");
    sails.sockets.leave(req, roomName, function (err) {
      if (err) {
        return res.serverError(err);
      }
      return res.json({
        message: "Left a fun room called " + roomName + "!",
      });
    });
  };
}
